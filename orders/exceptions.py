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


class ValidationFailed(DomainError):
    code = "validation_failed"
