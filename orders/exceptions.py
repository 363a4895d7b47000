"""Domain errors. Their messages are shown to people: say what happened and what to do."""

from __future__ import annotations


class DomainError(Exception):
    """A business rule refused the request; nothing was changed."""

    code = "domain_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class IllegalTransition(DomainError):
    code = "illegal_transition"


class Conflict(DomainError):
    """The request is well formed, but what is already recorded refuses it (money already taken,
    a reference another attempt holds). The API answers 409."""

    code = "conflict"


class ValidationFailed(DomainError):
    """Bad input. `field` names the input it is about, when one is (forms and the API show the
    message beside that field)."""

    code = "validation_failed"

    def __init__(self, message: str, *, code: str | None = None, field: str = "") -> None:
        super().__init__(message, code=code)
        self.field = field
