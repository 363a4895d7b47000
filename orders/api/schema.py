"""Error responses stated in the OpenAPI schema, shared by every API view (orders, tickets)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse

from orders.api.serializers import ErrorSerializer


def error_response(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


E400 = {400: error_response("Invalid request: `fields` says which fields and why.")}
E401 = {401: error_response("Not authenticated.")}
E403 = {403: error_response("Authenticated, but not allowed (for example a viewer writing).")}
E404 = {404: error_response("No such order among those you can see.")}
E409 = {409: error_response("The order's state refuses the action.")}
E413 = {413: error_response("The request body is larger than 256 KiB.")}
E429 = {429: error_response("Too many writes; see Retry-After.")}
READ_ERRORS = {**E401, **E403}
WRITE_ERRORS = {**E400, **E401, **E403, **E413, **E429}
