"""Fields every log line carries while they are bound: the request id of a web request, the
order reference and provider of the engine's work on one payment.

One context variable holds them, so they follow the code through function calls without
being passed along, and each thread (the re-check's writer threads) or request has its own.
The logging configuration (`backoffice.monitoring.logs`) copies them onto every record.
Nothing here imports Django, so the logging setup can load it before the apps are ready.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Mapping

# The fields the formatters know; others may be bound too and appear in JSON lines.
REQUEST_ID = "request_id"
ORDER_REF = "order_ref"
PROVIDER = "provider"

_EMPTY: Mapping[str, str] = MappingProxyType({})
_fields: ContextVar[Mapping[str, str]] = ContextVar("log_fields", default=_EMPTY)


def current() -> Mapping[str, str]:
    """The fields bound right now (read-only)."""
    return _fields.get()


def push(**fields: object) -> Token:
    """Bind `fields` on top of the current ones until `pop(token)`; empty values are skipped."""
    merged = dict(_fields.get())
    merged.update({name: str(value) for name, value in fields.items() if value not in (None, "")})
    return _fields.set(MappingProxyType(merged))


def pop(token: Token) -> None:
    _fields.reset(token)


def clear() -> None:
    """Drop every bound field (a new request starts on a thread that served another)."""
    _fields.set(_EMPTY)


@contextmanager
def bound(**fields: object) -> Iterator[None]:
    """`with bound(order_ref=..., provider=...):` every log line inside carries them."""
    token = push(**fields)
    try:
        yield
    finally:
        pop(token)
