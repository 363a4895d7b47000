from __future__ import annotations

import io

from rest_framework.parsers import JSONParser

from orders.api.errors import RequestTooLarge

MAX_BODY_BYTES = 256 * 1024


class LimitedJSONParser(JSONParser):
    """JSON bodies up to 256 KiB; larger ones answer 413 before anything is parsed. The stream is
    read with a cap as well, so a missing or false Content-Length changes nothing."""

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        except ValueError:
            declared = 0
        if declared > MAX_BODY_BYTES:
            raise RequestTooLarge(MAX_BODY_BYTES)
        body = stream.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            raise RequestTooLarge(MAX_BODY_BYTES)
        return super().parse(io.BytesIO(body), media_type, parser_context)
