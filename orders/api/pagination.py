from __future__ import annotations

from django.utils.translation import gettext as _
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination


class OrderCursorPagination(CursorPagination):
    """Newest first. Cursors stay stable while new orders arrive, and no page costs a COUNT.

    Bad input is a 400 naming the parameter, like every other query parameter: DRF's own
    answers are a 404 for a cursor it cannot read and silently the default size for a
    `page_size` that is not a number."""

    ordering = ("-submitted_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_size(self, request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            size = int(raw)
        except ValueError:
            size = 0
        if size < 1:
            raise ValidationError({self.page_size_query_param: [
                _("Give a whole number of at least 1 (more than %(max)d counts as %(max)d).")
                % {"max": self.max_page_size}
            ]})
        return min(size, self.max_page_size)

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except NotFound:
            raise ValidationError({self.cursor_query_param: [
                _("This cursor is not valid: follow the next and previous links as they are.")
            ]}) from None

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"]["minimum"] = 1
                parameter["description"] = _("Results per page: default %(default)d, at most %(max)d.") % {
                    "default": self.page_size, "max": self.max_page_size}
        return parameters
