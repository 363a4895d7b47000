"""The URL configuration as a list of endpoints, for `tests/test_scoping.py`.

`endpoints()` walks `django.urls.get_resolver()` and returns every concrete URL pattern with
its readable route (`api/v1/orders/<order_id>/cancel/`), its reversible name, the names of its
URL kwargs and the HTTP methods its view declares. Everything here runs at collection time, in
the resolver's order, so test ids are the same in every pytest-xdist worker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.resolvers import RegexPattern

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
METHODS = ("GET", *WRITE_METHODS)


@dataclass(frozen=True)
class Endpoint:
    route: str  # readable: "api/v1/orders/<order_id>/", no regex syntax
    name: str | None  # "orders_api:order-detail", None for unnamed patterns
    kwargs: tuple[str, ...]  # URL kwarg names, outermost first
    callback: object

    def __str__(self) -> str:
        return "/" + self.route

    @cached_property
    def declared_methods(self) -> frozenset[str] | None:
        """The methods the view accepts (GET, POST, PUT, PATCH, DELETE), or None when it cannot be
        told without calling it (a function view without `require_http_methods`)."""
        return declared_methods(self.callback)

    def url(self, values: dict[str, str]) -> str:
        kwargs = {name: values[name] for name in self.kwargs}
        if self.name:
            return reverse(self.name, kwargs=kwargs)
        path = self.route
        for name, value in kwargs.items():
            path = path.replace(f"<{name}>", str(value))
        return "/" + path


# --- the resolver --------------------------------------------------------------------------


def _readable(pattern) -> str:
    """A route or regex piece as a route: `^orders/(?P<order_id>[0-9]+)/$` -> `orders/<order_id>/`."""
    text = str(pattern)
    if isinstance(pattern, RegexPattern):
        return _readable_regex(text)
    return re.sub(r"<(?:[^>:]+:)?([^>]+)>", r"<\1>", text)


def _readable_regex(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("(?P<", i):
            end = text.index(">", i)
            out.append("<" + text[i + 4:end] + ">")
            depth, i = 1, end + 1
            while i < len(text) and depth:  # skip the group's body, nested groups included
                if text[i] == "\\":
                    i += 1
                elif text[i] == "(":
                    depth += 1
                elif text[i] == ")":
                    depth -= 1
                i += 1
            continue
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if char not in "^$":
            out.append(char)
        i += 1
    return "".join(out)


def _group_names(pattern) -> list[str]:
    index = pattern.regex.groupindex
    return sorted(index, key=index.get)


def endpoints() -> list[Endpoint]:
    found: list[Endpoint] = []

    def walk(resolver: URLResolver, route: str, namespaces: tuple[str, ...], kwargs: tuple[str, ...]) -> None:
        for item in resolver.url_patterns:
            piece = _readable(item.pattern)
            names = (*kwargs, *_group_names(item.pattern))
            if isinstance(item, URLResolver):
                spaces = (*namespaces, item.namespace) if item.namespace else namespaces
                walk(item, route + piece, spaces, names)
            elif isinstance(item, URLPattern):
                name = ":".join((*namespaces, item.name)) if item.name else None
                found.append(Endpoint(route + piece, name, names, item.callback))

    walk(get_resolver(), "", (), ())
    return found


# --- methods -------------------------------------------------------------------------------


def declared_methods(callback) -> frozenset[str] | None:
    actions = getattr(callback, "actions", None)  # a DRF viewset's route: {"get": "list", ...}
    if actions:
        return frozenset(method.upper() for method in actions)
    view_class = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
    if view_class is not None:  # a class-based view (Django's or DRF's APIView)
        return frozenset(m.upper() for m in view_class.http_method_names
                         if m.upper() in METHODS and hasattr(view_class, m))
    return _require_http_methods(callback)


def _require_http_methods(func) -> frozenset[str] | None:
    """The list given to Django's `require_http_methods` (and `require_GET`, `require_POST`...)
    anywhere in the decorator chain of a function view, found in the decorator's closure."""
    seen: set[int] = set()
    while func is not None and id(func) not in seen:
        seen.add(id(func))
        code = getattr(func, "__code__", None)
        if code is not None and func.__closure__:
            cells = dict(zip(code.co_freevars, func.__closure__))
            if "request_method_list" in cells:
                return frozenset({m.upper() for m in cells["request_method_list"].cell_contents} & set(METHODS))
        func = getattr(func, "__wrapped__", None)
    return None
