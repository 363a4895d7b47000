"""The translated labels of the order choices, built once per language.

`Model.get_FOO_display()` rebuilds and hashes a field's lazy choices on every call: about a
millisecond for a page of 50 rows with two labels each, minutes for an export of a million.
Lists and exports look labels up here instead. The dicts are shared: do not change them.
"""

from __future__ import annotations

from functools import lru_cache

from django.utils.translation import get_language

from orders.causes import Category, Cause
from orders.states import AttemptStatus, OrderStatus


def choice_labels() -> dict[str, dict[str, str]]:
    """{"status", "cause", "category", "attempt"} → value → label, in the active language."""
    return _labels_in(get_language() or "")


@lru_cache(maxsize=16)
def _labels_in(language: str) -> dict[str, dict[str, str]]:
    # `language` is the cache key; str() translates into the active language, which it names.
    return {
        "status": {value: str(label) for value, label in OrderStatus.choices},
        "cause": {value: str(label) for value, label in Cause.choices},
        "category": {value: str(label) for value, label in Category.choices},
        "attempt": {value: str(label) for value, label in AttemptStatus.choices},
    }
