"""Log lines: plain (the default) or one JSON object a line (`LOG_FORMAT=json`), each with the
request id and, on the engine's lines, the order reference and provider; personal data and
payloads masked. Wired in `backoffice.settings.LOGGING` (docs/observability.md).

Two filters sit on the console handler, so they see the records of every logger:

- `ContextFilter` copies the fields bound in `orders.log_context` (request id, order
  reference, provider) onto the record; fields given with `extra=` win.
- `MaskingFilter` masks email addresses, phone numbers and card numbers in the message, its
  arguments and the extra fields, and the values of sensitive keys (body, payload, card,
  authorization, secret, token, ...) in dictionaries passed as arguments or extras.

Nothing here imports models: logging is configured before the apps are ready.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from orders import log_context

MASK = "***"

# Keys whose values are payloads, credentials or personal data: masked whole. A key matches
# when it contains one of these (case-insensitive, "-" read as "_").
SENSITIVE_KEY_PARTS = (
    "body", "payload", "card", "authorization", "secret", "token", "password", "passwd", "signature",
    "cookie", "api_key", "apikey", "credential", "cvv", "cvc", "email", "phone", "address", "raw",
    "excerpt",
)

_EMAIL = re.compile(r"(?<![\w.+-])([\w.+-])[\w.+-]*@([\w-]+(?:\.[\w-]+)+)")
_PHONES = (
    # International: +86 138 0013 8000, +1-202-555-0143, +44 (20) 7946 0958
    re.compile(r"(?<![\w+])\+\d[\d ().\-]{6,20}\d(?!\w)"),
    # Mainland China mobile numbers: 13800138000
    re.compile(r"(?<![\w.])1[3-9]\d{9}(?!\w|\.\d)"),
    # North American with separators: (202) 555-0143, 202-555-0143, 202.555.0143
    re.compile(r"(?<![\w.-])(?:\(\d{3}\)\s?|\d{3}[ .\-])\d{3}[ .\-]\d{4}(?![\w.-])"),
)
# 13 to 19 digits, optionally grouped by spaces or dashes; masked only when the Luhn check
# passes, so ids and timestamps of that length stay readable.
_CARD = re.compile(r"(?<![\w-])\d(?:[ \-]?\d){12,18}(?![\w-])")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _mask_card(match: re.Match) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return f"{MASK}{digits[-4:]}" if _luhn_ok(digits) else match.group(0)


def _mask_phone(match: re.Match) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return f"{MASK}{digits[-2:]}"


def mask_text(text: str) -> str:
    """The text with email addresses, phone numbers and card numbers masked."""
    if not text:
        return text
    text = _EMAIL.sub(lambda m: f"{m.group(1)}{MASK}@{m.group(2)}", text)
    text = _CARD.sub(_mask_card, text)
    for pattern in _PHONES:
        text = pattern.sub(_mask_phone, text)
    return text


def is_sensitive_key(key: object) -> bool:
    name = str(key).lower().replace("-", "_")
    return any(part in name for part in SENSITIVE_KEY_PARTS)


def mask_value(value: Any, *, depth: int = 0) -> Any:
    """A copy of `value` safe to log: strings masked, sensitive keys of mappings hidden, lists,
    tuples and sets masked item by item (to a few levels deep)."""
    if isinstance(value, str):
        return mask_text(value)
    if depth > 4:
        return value
    if isinstance(value, Mapping):
        return {k: (MASK if is_sensitive_key(k) else mask_value(v, depth=depth + 1)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return type(value)(mask_value(item, depth=depth + 1) for item in value)
    if isinstance(value, (bytes, bytearray)):
        return MASK
    return value


# Attributes every LogRecord has; anything else on a record came from `extra=` or a filter.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
CONTEXT_FIELDS = (log_context.REQUEST_ID, log_context.ORDER_REF, log_context.PROVIDER)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRIBUTES and not k.startswith("_")}


class ContextFilter(logging.Filter):
    """Copies the bound log context (request id, order reference, provider) onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in log_context.current().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class MaskingFilter(logging.Filter):
    """Masks personal data and payloads in the message, its arguments and the extra fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_masked", False):
            return True
        if isinstance(record.msg, str):
            record.msg = mask_text(record.msg)
        elif record.msg is not None and not isinstance(record.msg, (int, float)):
            record.msg = mask_value(record.msg if isinstance(record.msg, Mapping) else str(record.msg))
        if isinstance(record.args, Mapping):
            record.args = mask_value(record.args)
        elif record.args:
            record.args = tuple(mask_value(arg) for arg in record.args)
        for key, value in extra_fields(record).items():
            if key in CONTEXT_FIELDS:
                continue
            setattr(record, key, MASK if is_sensitive_key(key) else mask_value(value))
        record._masked = True
        return True


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    return mask_text(record.exc_text or "")


class PlainFormatter(logging.Formatter):
    """`time level logger message`, then the bound context (request id, order, provider) when
    there is one: the default format, readable on a terminal."""

    default_format = "%(asctime)s %(levelname)s %(name)s %(message)s"

    def __init__(self, fmt: str | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(fmt or self.default_format, *args, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_text(self.formatException(record.exc_info))
        line = super().format(record)
        context = " ".join(f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if getattr(record, name, None))
        if not context:
            return line
        first, newline, rest = line.partition("\n")
        return f"{first} [{context}]{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the bound context
    (request_id, order_ref, provider), the extra fields, and the exception when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value:
                entry[name] = value
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info or record.exc_text:
            entry["exception"] = _exception_text(self, record)
        if record.stack_info:
            entry["stack"] = mask_text(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)
