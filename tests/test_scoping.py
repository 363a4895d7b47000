"""Scoping, for every URL the project serves, generated from the URL configuration.

- Every object endpoint (API and HTML) called by a manager of another merchant answers 404: a
  manager holds the strongest merchant role, so the 404 proves scoping, not a missing role.
- Every page that manager reads (lists above all) shows nothing of the other merchant.
- Every write called by a viewer answers 403.

The cases are built at collection time from `django.urls.get_resolver()`: a new URL is tested
the moment it exists. Its URL kwargs are filled by name, following the project's convention:

    order_id        an Order's id              ticket_id      a support Ticket's id
    membership_id   a MerchantMembership's id  merchant_code  a Merchant's code

A kwarg with another name fails `test_every_url_kwarg_is_known` (and the URL's own cases) until
`KWARGS` below learns how to fill it. A URL that is not merchant-scoped at all goes into
`EXCLUDED` with the reason; an exclusion that matches no URL any more fails as stale.

405 is accepted only for a method the view does not accept. A manager's 403 on another
merchant's object is accepted only when the same call on the manager's own object is refused
too (a staff-only action): then the answer says nothing about the object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from orders import services
from orders.causes import Cause
from orders.models import MembershipRole, Merchant, MerchantMembership, Order
from support import services as support_services
from support.models import Ticket, TicketSource
from tests.orders.engine_helpers import ENGINE_ACTOR, add_attempt, flag_order
from tests.orders.factories import MerchantFactory, MembershipFactory, UserFactory
from tests.scoping_helpers import WRITE_METHODS, Endpoint, endpoints

# --- what is not merchant-scoped, and why ------------------------------------------------------
# Full-match regexes on the readable route (as in the test ids). Static files need no entry:
# whitenoise serves them from its middleware, outside the URL configuration.

EXCLUDED: dict[str, str] = {
    r"": "redirects: staff to the admin, merchant users to the portal, others to the login; no data",
    r"healthz": "liveness for the operators: no login, no data",
    r"readyz": "readiness for the operators: no login, no merchant data",
    r"metrics": "Prometheus metrics: a bearer token of its own (METRICS_TOKEN), no merchant in any label",
    r"accounts/login/": "the login page: no user yet, nothing to scope",
    r"accounts/logout/": "logs the caller out; no data",
    r"i18n/setlang/": "sets the language of the session; no data",
    r"webhooks/<provider>/": "provider callbacks: checked by their signature, not by a user",
    r"track/<token>/": "the customer's status page: the signed token is the credential",
    r"track/<token>/report/": "the status page's report form: the signed token is the credential",
    r"admin/.*": "the Django admin is for staff only (test_admin_refuses_merchant_users)",
    r"api/schema/": "the OpenAPI schema; no data",
    r"api/docs/": "Swagger UI; no data",
    r"api/": "the API's catch-all: a JSON 404 for unknown /api/ paths",
}

# --- the world: merchant A owns the objects, B's manager and A's viewer call --------------------

# Strings only merchant A's data contains: none of them may show in a list that B's manager sees.
A_CODE = "scope-alpha"
A_NAME = "Alpha Scoped Goods"
A_REFERENCE = "ALPHA-SECRET-0001"
A_EMAIL = "alpha.customer@scope.example"
A_SUBJECT = "Alpha secret ticket subject"


@dataclass
class Side:
    merchant: Merchant
    order: Order
    ticket: Ticket
    membership: MerchantMembership


@dataclass
class World:
    a: Side
    b: Side
    b_manager: object  # the caller from another merchant (its strongest role)
    a_viewer: object  # the caller who may only read
    a_manager: object

    @property
    def a_markers(self) -> list[str]:
        return [A_CODE, A_NAME, A_REFERENCE, A_EMAIL, A_SUBJECT]


def _side(code: str, name: str, reference: str, email: str, subject: str) -> Side:
    merchant = MerchantFactory(code=code, name=name)
    order = services.create_order(
        merchant=merchant, reference=reference, amount=Decimal("128.00"), currency="CNY",
        customer_name="Scope Customer", customer_email=email, shipping_address="1 Scope Road",
        actor=ENGINE_ACTOR,
    )
    add_attempt(order)
    flag_order(order, Cause.RESULT_UNKNOWN)  # unreturned: it counts in every summary
    ticket = support_services.open_ticket(order=order, subject=subject, source=TicketSource.STAFF,
                                          actor=ENGINE_ACTOR)
    # The membership in URLs is a colleague's, an operator: not the caller's own.
    membership = MembershipFactory(merchant=merchant, role=MembershipRole.OPERATOR)
    return Side(merchant, Order.objects.get(pk=order.pk), ticket, membership)


def _member(merchant: Merchant, role: str):
    user = UserFactory()
    MembershipFactory(user=user, merchant=merchant, role=role)
    return user


@pytest.fixture
def world(db) -> World:
    a = _side(A_CODE, A_NAME, A_REFERENCE, A_EMAIL, A_SUBJECT)
    b = _side("scope-bravo", "Bravo Scoped Goods", "BRAVO-0001", "bravo.customer@scope.example",
              "Bravo ticket subject")
    return World(
        a=a, b=b,
        b_manager=_member(b.merchant, MembershipRole.MANAGER),
        a_viewer=_member(a.merchant, MembershipRole.VIEWER),
        a_manager=_member(a.merchant, MembershipRole.MANAGER),
    )


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    # The API's write throttle counts in the cache, and user ids repeat between tests.
    cache.clear()
    yield
    cache.clear()


# --- filling URL kwargs -------------------------------------------------------------------------

KWARGS = {
    "order_id": lambda side: side.order.pk,
    "ticket_id": lambda side: side.ticket.pk,
    "membership_id": lambda side: side.membership.pk,
    "merchant_code": lambda side: side.merchant.code,
}


def _unknown_kwargs(endpoint: Endpoint) -> list[str]:
    return [name for name in endpoint.kwargs if name not in KWARGS]


def _unknown_kwarg_message(endpoint: Endpoint) -> str:
    return "; ".join(
        f"new URL kwarg {name!r} in route {endpoint}: teach tests/test_scoping.py how to fill it (KWARGS)"
        for name in _unknown_kwargs(endpoint)
    )


def fill(endpoint: Endpoint, side: Side) -> dict[str, str]:
    if _unknown_kwargs(endpoint):
        pytest.fail(_unknown_kwarg_message(endpoint))
    return {name: str(KWARGS[name](side)) for name in endpoint.kwargs}


# --- the cases, from the resolver ----------------------------------------------------------------


def _excluded_by(endpoint: Endpoint) -> str | None:
    return next((pattern for pattern in EXCLUDED if re.fullmatch(pattern, endpoint.route)), None)


ALL = endpoints()
SCOPED = [e for e in ALL if _excluded_by(e) is None]
OBJECTS = [e for e in SCOPED if e.kwargs]
COLLECTIONS = [e for e in SCOPED if not e.kwargs]


def _writes(endpoint: Endpoint) -> list[str]:
    """The write methods to try: those the view declares; POST when it cannot be told."""
    declared = endpoint.declared_methods
    if declared is None:
        return ["POST"]
    return [method for method in WRITE_METHODS if method in declared]


def _accepts(endpoint: Endpoint, method: str) -> bool | None:
    declared = endpoint.declared_methods
    return None if declared is None else method in declared


def _foreign_cases():
    for endpoint in OBJECTS:
        for method in ("GET", *_writes(endpoint)):
            yield pytest.param(endpoint, method, False, id=f"{method} {endpoint}")
            # B's own code with A's object: the view must scope the object to the code, not
            # only check that the caller belongs to the merchant in the URL.
            if "merchant_code" in endpoint.kwargs and len(endpoint.kwargs) > 1:
                yield pytest.param(endpoint, method, True, id=f"{method} {endpoint} with own merchant_code")


def _viewer_cases():
    for endpoint in SCOPED:
        for method in _writes(endpoint):
            yield pytest.param(endpoint, method, id=f"{method} {endpoint}")


def _own_page_cases():
    # Every page B may read, filled with B's own objects: lists above all (the API's and the
    # portal's), but a detail page or an export must not pull in A's data either.
    for endpoint in SCOPED:
        if _accepts(endpoint, "GET") is not False:
            yield pytest.param(endpoint, id=f"GET {endpoint}")


def call(client: Client, method: str, url: str, **extra):
    """GET, or a write with an empty body: JSON for the API, a form elsewhere. Scoping and
    roles must answer before the body is looked at."""
    if method == "GET":
        return client.get(url, **extra)
    if url.startswith("/api/"):
        return client.generic(method, url, b"{}", content_type="application/json", **extra)
    return client.generic(method, url, b"", content_type="application/x-www-form-urlencoded", **extra)


def _body(response) -> str:
    content = b"".join(response.streaming_content) if response.streaming else response.content
    return content.decode("utf-8", errors="replace")


def _describe(response) -> str:
    location = f" -> {response['Location']}" if response.has_header("Location") else ""
    content = b"(streamed)" if response.streaming else response.content[:300]
    return f"{response.status_code}{location}: {content!r}"


@pytest.mark.parametrize(("endpoint", "method", "own_code"), list(_foreign_cases()))
def test_another_merchants_object_is_not_found(endpoint: Endpoint, method: str, own_code: bool, world, client):
    values = fill(endpoint, world.a)
    if own_code:
        values["merchant_code"] = world.b.merchant.code
    client.force_login(world.b_manager)
    response = call(client, method, endpoint.url(values))
    if response.status_code == 404:
        return
    if response.status_code == 405 and not _accepts(endpoint, method):
        return  # the view does not take this method at all (or, for a function view, says so)
    if response.status_code == 403:
        own = call(client, method, endpoint.url(fill(endpoint, world.b)))
        if own.status_code == 403:
            return  # refused on B's own object too: a role refusal that says nothing about A's
    pytest.fail(
        f"{method} {endpoint.url(values)} by a manager of another merchant answered {_describe(response)}; "
        "expected 404 (the object must be looked up among the caller's merchants)"
    )


@pytest.mark.parametrize("endpoint", list(_own_page_cases()))
@pytest.mark.parametrize("query", ["", f"?merchant={A_CODE}"], ids=["plain", "filtered by A"])
def test_own_pages_show_nothing_of_another_merchant(endpoint: Endpoint, query: str, world, client):
    url = endpoint.url(fill(endpoint, world.b)) + query
    client.force_login(world.b_manager)
    response = client.get(url)
    assert response.status_code < 500, _describe(response)
    body = _body(response)
    # A's code is in the filtered request itself (pages echo their query in links and forms).
    leaked = [marker for marker in world.a_markers if marker in body and marker not in query]
    assert not leaked, (
        f"GET {url} by a manager of merchant {world.b.merchant.code} shows {leaked} of merchant {A_CODE} "
        f"({response.status_code})"
    )


@pytest.mark.parametrize(("endpoint", "method"), list(_viewer_cases()))
def test_a_viewer_cannot_write(endpoint: Endpoint, method: str, world, client):
    url = endpoint.url(fill(endpoint, world.a))
    client.force_login(world.a_viewer)
    response = call(client, method, url)
    if response.status_code == 403:
        return
    if response.status_code == 405 and not _accepts(endpoint, method):
        return
    pytest.fail(f"{method} {url} by a viewer of the merchant answered {_describe(response)}; expected 403")


# --- the tables stay true -------------------------------------------------------------------


def test_every_url_kwarg_is_known():
    problems = [_unknown_kwarg_message(e) for e in SCOPED if _unknown_kwargs(e)]
    assert not problems, "\n".join(problems)


def test_no_exclusion_is_stale():
    stale = [p for p in EXCLUDED if not any(re.fullmatch(p, e.route) for e in ALL)]
    assert not stale, f"exclusions in tests/test_scoping.py that match no URL any more: {stale}"


def test_the_cases_cover_the_api():
    # A guard on the walk itself: should it stop finding URLs, every test above would pass empty.
    routes = {e.route for e in OBJECTS}
    assert "api/v1/orders/<order_id>/" in routes
    assert "api/v1/orders/<order_id>/cancel/" in routes
    assert {e.route for e in COLLECTIONS} >= {"api/v1/orders/", "api/v1/unreturned/summary/"}


def test_the_summary_counts_nothing_of_another_merchant(world, client):
    client.force_login(world.b_manager)
    counts = client.get(reverse("orders_api:unreturned-summary")).json()
    assert counts["total"] == 1  # B's own unreturned order, not A's
    client.force_login(world.a_viewer)
    assert client.get(reverse("orders_api:unreturned-summary")).json()["total"] == 1


# --- the admin: staff only ----------------------------------------------------------------------

ADMIN = [e for e in ALL if e.route.startswith("admin/") and e.name
         and e.name not in ("admin:login", "admin:logout")]


def _admin_values(endpoint: Endpoint, side: Side) -> dict[str, str]:
    values = {"object_id": side.order.pk, "id": side.membership.user_id, "approval_id": 1, "app_label": "orders",
              "content_type_id": ContentType.objects.get_for_model(Order).pk}
    if "ticket" in (endpoint.name or ""):
        values["object_id"] = side.ticket.pk
    elif "merchantmembership" in (endpoint.name or ""):
        values["object_id"] = side.membership.pk
    return {name: str(values.get(name, 1)) for name in endpoint.kwargs}


@pytest.mark.parametrize("endpoint", ADMIN, ids=[f"GET {e}" for e in ADMIN])
def test_admin_refuses_merchant_users(endpoint: Endpoint, world, client):
    # A's manager, on A's own objects: the admin is for staff whatever the merchant role.
    client.force_login(world.a_manager)
    url = endpoint.url(_admin_values(endpoint, world.a))
    response = client.get(url)
    assert response.status_code == 302, f"GET {url} by a merchant user: {_describe(response)}"
    assert response["Location"].startswith(reverse("admin:login")), _describe(response)


@pytest.mark.parametrize("action", ["check_now", "cancel", "mark_paid", "note"])
def test_admin_order_actions_refuse_merchant_users(action, world, client):
    client.force_login(world.a_manager)
    response = client.post(reverse(f"admin:orders_order_{action}", args=[world.a.order.pk]), {"reason": "x"})
    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))
    assert Order.objects.get(pk=world.a.order.pk).status == world.a.order.status


# --- CSRF is on for session writes ---------------------------------------------------------------

PAGES = [e for e in SCOPED if not e.route.startswith("api/") and _accepts(e, "POST") is not False]


def test_session_writes_to_the_api_need_the_csrf_token(world):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.a_manager)
    response = client.post(reverse("orders_api:order-cancel", args=[world.a.order.pk]), {"reason": "x"},
                           content_type="application/json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]["message"]


@pytest.mark.skipif(not PAGES, reason="no merchant-scoped HTML page takes POST yet")
@pytest.mark.parametrize("endpoint", PAGES[:1], ids=[f"POST {e}" for e in PAGES[:1]])
def test_portal_posts_need_the_csrf_token(endpoint: Endpoint, world):
    url = endpoint.url(fill(endpoint, world.a))
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.a_manager)
    response = client.post(url, {})
    assert response.status_code == 403, _describe(response)
    assert b"CSRF" in response.content
