"""A fake payment service provider that runs as a real HTTP service.

It stands in for a third party in demos, end-to-end runs and the adapter tests, and it can
misbehave on purpose (slow, hanging, failing, lying about amounts, losing or duplicating
callbacks) so every cause in the diagnosis can be produced on demand.

It deliberately knows nothing of our database or models: it is "their" system. Start it with
`python manage.py sandbox_provider` (or `python -m orders.providers.sandbox`), or in-process:

    server = SandboxServer(Knobs(seed=1), webhook_url="http://127.0.0.1:8000/webhooks/sandbox/")
    port = server.start()   # port 0 picks a free one
    ...
    server.stop()

API (JSON everywhere):
    POST /v1/payments            create; idempotent on idempotency_key (201 new, 200 replay)
    GET  /v1/payments/<ref>      one payment, 404 if unknown
    GET  /v1/control             knobs and counters
    POST /v1/control             change knobs (partial update)
    GET  /healthz                liveness

Outcomes are drawn when a payment is created, from a seeded RNG, so a scenario replays the
same way for the same seed and the same sequence of requests. A payment stays pending for
`pending_seconds`, then reaches its outcome lazily (on the next request) or through the
delivery thread, which also sends the signed callbacks and redelivers them with backoff.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import os
import random
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from orders.providers import signing

logger = logging.getLogger(__name__)

SECRET_ENV = "SANDBOX_WEBHOOK_SECRET"
DEFAULT_PORT = 8100
MAX_REQUEST_BYTES = 64 * 1024
MISMATCH_DELTA = Decimal("1.00")
DECLINE_CODES = ("card_declined", "insufficient_funds", "do_not_honor")
CALLBACK_TIMEOUT = 5.0  # seconds per delivery attempt


@dataclass(frozen=True)
class Knobs:
    """Scenario settings. Rates are probabilities between 0 and 1."""

    latency_ms: int = 0
    timeout_rate: float = 0.0
    hang_seconds: float = 10.0
    error_rate: float = 0.0
    malformed_rate: float = 0.0
    decline_rate: float = 0.0
    expire_rate: float = 0.0
    pending_seconds: float = 3.0
    action_required_rate: float = 0.0
    lost_callback_rate: float = 0.0
    amount_mismatch_rate: float = 0.0
    duplicate_success_rate: float = 0.0
    callback_delay_ms: int = 0
    callback_attempts: int = 5
    callback_retry_ms: int = 500
    seed: int | None = None

    def updated(self, values: Mapping[str, Any]) -> Knobs:
        """A validated copy with `values` applied. ValueError names the offending knob."""
        if not isinstance(values, Mapping):
            raise ValueError("knobs must be a JSON object")
        known = {f.name: f for f in fields(self)}
        changes: dict[str, Any] = {}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown knob: {name}")
            changes[name] = _coerce_knob(name, value)
        return replace(self, **changes)


KNOB_HELP: dict[str, str] = {
    "latency_ms": "delay before answering any payments request (ms)",
    "timeout_rate": "share of payments requests that are processed but answered only after hang_seconds",
    "hang_seconds": "how long a 'timed out' request hangs; make it longer than the client's read timeout",
    "error_rate": "share of payments requests answered 500/503 without processing them",
    "malformed_rate": "share of payments requests answered 200 with a body that is not a valid payment",
    "decline_rate": "share of payments that end failed with a decline code",
    "expire_rate": "share of payments that end expired (customer never finished)",
    "pending_seconds": "how long a payment stays pending before its outcome",
    "action_required_rate": "share of payments pending with action_required=3ds (payment.pending callback)",
    "lost_callback_rate": "share of payments whose callbacks are never sent",
    "amount_mismatch_rate": "share of payments reported with amount + 1.00",
    "duplicate_success_rate": "share of successes that also produce a succeeded twin payment for the same order",
    "callback_delay_ms": "delay between an outcome and its callback (ms)",
    "callback_attempts": "deliveries tried per callback before giving up",
    "callback_retry_ms": "first redelivery delay (ms), doubled each time",
    "seed": "seed for the outcome and fault generators (omit for a random run)",
}

_RATES = {name for name in KNOB_HELP if name.endswith("_rate")}
_INTS = {"latency_ms", "callback_delay_ms", "callback_attempts", "callback_retry_ms"}


def _coerce_knob(name: str, value: Any) -> Any:
    if name == "seed":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("seed must be an integer or null")
        return value
    # bool is an int in Python; "true" as a rate is a mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number")
    if name in _INTS:
        if int(value) != value:
            raise ValueError(f"{name} must be a whole number")
        value = int(value)
    else:
        value = float(value)
    if value < 0 or (name in _RATES and value > 1):
        raise ValueError(f"{name} must be between 0 and 1" if name in _RATES else f"{name} must not be negative")
    if name == "callback_attempts" and value < 1:
        raise ValueError("callback_attempts must be at least 1")
    return value


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_reference() -> str:
    # From the OS, not the seeded RNG: a restarted sandbox with the same seed must not hand
    # out references that a desk database already holds.
    return "sbx_" + secrets.token_hex(12)


@dataclass
class Payment:
    provider_reference: str
    idempotency_key: str | None
    order_reference: str
    merchant: str
    amount: Decimal
    currency: str
    reported_amount: Decimal
    outcome: str
    planned_failure_code: str | None
    final_at: float  # time.monotonic() deadline
    lost_callbacks: bool
    duplicate: bool
    status: str = "pending"
    failure_code: str | None = None
    action_required: str | None = None
    twin_of: str | None = None
    created_at: str = field(default_factory=_now_iso)
    updated_at: str = field(default_factory=_now_iso)

    def to_json(self) -> dict[str, Any]:
        return {
            "provider_reference": self.provider_reference,
            # Echoed so the client can match a callback to the request that created the
            # payment even when the create's answer never reached it (null for twins).
            "idempotency_key": self.idempotency_key,
            "order_reference": self.order_reference,
            "merchant": self.merchant,
            "amount": format(self.reported_amount, "f"),
            "currency": self.currency,
            "status": self.status,
            "failure_code": self.failure_code,
            "action_required": self.action_required,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    def same_request(self, request: Mapping[str, Any]) -> bool:
        return (
            self.amount == request["amount"]
            and self.currency == request["currency"]
            and self.order_reference == request["order_reference"]
            and self.merchant == request["merchant"]
        )


@dataclass
class Delivery:
    """One callback event; redeliveries keep its id (that is what makes them de-duplicable)
    and its body, but are signed again with a fresh timestamp."""

    event_id: str
    event_type: str
    provider_reference: str
    body: bytes
    due: float
    attempts: int = 0


@dataclass
class Stats:
    payments_created: int = 0
    requests_failed: int = 0
    requests_hung: int = 0
    requests_malformed: int = 0
    callbacks_delivered: int = 0
    callback_attempts_failed: int = 0
    callbacks_given_up: int = 0
    callbacks_suppressed: int = 0
    callbacks_unsent: int = 0  # no webhook URL configured


class Reply:
    """What the HTTP layer should send back."""

    def __init__(self, status: int, payload: Any = None, *, raw: bytes | None = None) -> None:
        self.status = status
        self.body = raw if raw is not None else json.dumps(payload).encode()


class SandboxProvider:
    """The provider's state and rules, independent of the HTTP plumbing. Thread-safe."""

    def __init__(self, knobs: Knobs | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.knobs = knobs or Knobs()
        self._seed(self.knobs.seed)
        self.payments: dict[str, Payment] = {}
        self._by_key: dict[str, str] = {}
        self._deadlines: list[tuple[float, str]] = []  # heap of pending payments
        self.outbox: list[Delivery] = []
        self.stats = Stats()
        self.changed = threading.Event()  # wakes the delivery thread

    def _seed(self, seed: int | None) -> None:
        # Two streams: toggling a fault knob (which draws per request) must not shift the
        # outcomes drawn per payment, or a scenario would not replay.
        self._outcome_rng = random.Random(seed)
        self._fault_rng = random.Random(None if seed is None else seed + 1)

    # --- knobs -----------------------------------------------------------------------------

    def set_knobs(self, values: Mapping[str, Any]) -> Knobs:
        with self._lock:
            knobs = self.knobs.updated(values)
            if "seed" in values:
                self._seed(knobs.seed)
            self.knobs = knobs
        self.changed.set()
        return knobs

    def control(self) -> dict[str, Any]:
        with self._lock:
            pending = sum(1 for p in self.payments.values() if p.status == "pending")
            return {
                "knobs": asdict(self.knobs),
                "stats": {
                    **asdict(self.stats),
                    "payments": len(self.payments),
                    "payments_pending": pending,
                    "callbacks_queued": len(self.outbox),
                },
            }

    def count(self, stat: str) -> None:
        with self._lock:
            setattr(self.stats, stat, getattr(self.stats, stat) + 1)

    # --- faults ----------------------------------------------------------------------------

    def draw_faults(self) -> tuple[int | None, bool, bool]:
        """(error status or None, hang?, malformed?) for one payments request."""
        with self._lock:
            knobs = self.knobs
            # Always four draws, whatever the rates, so the stream stays aligned.
            r_error, r_code, r_hang, r_malformed = (self._fault_rng.random() for _ in range(4))
        error = (500 if r_code < 0.5 else 503) if r_error < knobs.error_rate else None
        return error, r_hang < knobs.timeout_rate, r_malformed < knobs.malformed_rate

    # --- payments --------------------------------------------------------------------------

    def create(self, payload: Any) -> Reply:
        try:
            request = _validate_create(payload)
        except ValueError as exc:
            return Reply(400, {"error": "invalid_request", "message": str(exc)})
        now = self._clock()
        with self._lock:
            self._advance(now)
            existing_ref = self._by_key.get(request["idempotency_key"])
            if existing_ref is not None:
                existing = self.payments[existing_ref]
                if not existing.same_request(request):
                    return Reply(
                        409,
                        {"error": "idempotency_conflict", "message": "idempotency_key reused with other parameters"},
                    )
                return Reply(200, existing.to_json())

            knobs = self.knobs
            rng = self._outcome_rng
            # A fixed number of draws per payment, in a fixed order, for replayable scenarios.
            r_outcome, r_action, r_lost, r_mismatch, r_duplicate, r_code = (rng.random() for _ in range(6))
            if r_outcome < knobs.decline_rate:
                outcome = "failed"
            elif r_outcome < knobs.decline_rate + knobs.expire_rate:
                outcome = "expired"
            else:
                outcome = "succeeded"
            mismatch = r_mismatch < knobs.amount_mismatch_rate
            payment = Payment(
                provider_reference=_new_reference(),
                idempotency_key=request["idempotency_key"],
                order_reference=request["order_reference"],
                merchant=request["merchant"],
                amount=request["amount"],
                currency=request["currency"],
                reported_amount=request["amount"] + MISMATCH_DELTA if mismatch else request["amount"],
                outcome=outcome,
                planned_failure_code=DECLINE_CODES[int(r_code * len(DECLINE_CODES))] if outcome == "failed" else None,
                final_at=now + knobs.pending_seconds,
                lost_callbacks=r_lost < knobs.lost_callback_rate,
                duplicate=outcome == "succeeded" and r_duplicate < knobs.duplicate_success_rate,
                action_required="3ds" if r_action < knobs.action_required_rate else None,
            )
            self.payments[payment.provider_reference] = payment
            self._by_key[request["idempotency_key"]] = payment.provider_reference
            heapq.heappush(self._deadlines, (payment.final_at, payment.provider_reference))
            self.stats.payments_created += 1
            if payment.action_required:
                self._emit(payment, "payment.pending", now)
            reply = Reply(201, payment.to_json())
        self.changed.set()
        return reply

    def get(self, provider_reference: str) -> Reply:
        with self._lock:
            self._advance(self._clock())
            payment = self.payments.get(provider_reference)
            if payment is None:
                return Reply(404, {"error": "not_found", "message": "no such payment"})
            return Reply(200, payment.to_json())

    def snapshot(self, provider_reference: str) -> dict[str, Any] | None:
        """The payment as the provider sees it now (tests and debugging)."""
        reply = self.get(provider_reference)
        return json.loads(reply.body) if reply.status == 200 else None

    def advance(self) -> float | None:
        """Finalize what is due; return the next deadline (monotonic) or None."""
        with self._lock:
            self._advance(self._clock())
            return self._next_wake()

    def _advance(self, now: float) -> None:
        # Caller holds the lock.
        while self._deadlines and self._deadlines[0][0] <= now:
            _deadline, ref = heapq.heappop(self._deadlines)
            payment = self.payments[ref]
            if payment.status != "pending":
                continue
            payment.status = payment.outcome
            payment.failure_code = payment.planned_failure_code
            payment.action_required = None
            payment.updated_at = _now_iso()
            self._emit(payment, f"payment.{payment.status}", now)
            if payment.duplicate:
                # The customer was charged twice (a double submit the provider did not catch);
                # the twin has its own reference and its callback is sent whatever happened
                # to the original's.
                twin = replace(
                    payment,
                    provider_reference=_new_reference(),
                    idempotency_key=None,
                    duplicate=False,
                    lost_callbacks=False,
                    twin_of=payment.provider_reference,
                    created_at=payment.updated_at,
                )
                self.payments[twin.provider_reference] = twin
                self._emit(twin, "payment.succeeded", now)

    def _emit(self, payment: Payment, event_type: str, now: float) -> None:
        # Caller holds the lock. The body is fixed now: redeliveries describe the payment as
        # it was when the event happened, as real providers' events do.
        if payment.lost_callbacks:
            self.stats.callbacks_suppressed += 1
            logger.info("sandbox: callback %s for %s lost on purpose", event_type, payment.provider_reference)
            return
        body = json.dumps({"type": event_type, "timestamp": _now_iso(), "data": payment.to_json()}).encode()
        self.outbox.append(
            Delivery(
                event_id="evt_" + secrets.token_hex(12),
                event_type=event_type,
                provider_reference=payment.provider_reference,
                body=body,
                due=now + self.knobs.callback_delay_ms / 1000,
            )
        )

    def _next_wake(self) -> float | None:
        candidates = [d.due for d in self.outbox]
        if self._deadlines:
            candidates.append(self._deadlines[0][0])
        return min(candidates) if candidates else None

    # --- callbacks -------------------------------------------------------------------------

    def take_due(self) -> list[Delivery]:
        with self._lock:
            now = self._clock()
            self._advance(now)
            due = [d for d in self.outbox if d.due <= now]
            self.outbox = [d for d in self.outbox if d.due > now]
            return due

    def delivery_done(self, delivery: Delivery, *, ok: bool) -> None:
        with self._lock:
            if ok:
                self.stats.callbacks_delivered += 1
                return
            self.stats.callback_attempts_failed += 1
            if delivery.attempts >= self.knobs.callback_attempts:
                self.stats.callbacks_given_up += 1
                logger.warning(
                    "sandbox: gave up on callback %s after %d attempts", delivery.event_id, delivery.attempts
                )
                return
            # Exponential backoff, like the providers we simulate.
            delay = self.knobs.callback_retry_ms / 1000 * 2 ** (delivery.attempts - 1)
            delivery.due = self._clock() + delay
            self.outbox.append(delivery)


def _validate_create(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise ValueError("body must be a JSON object")
    out: dict[str, Any] = {}
    for key in ("idempotency_key", "order_reference", "merchant", "currency"):
        value = payload.get(key)
        if not isinstance(value, str) or not value.strip() or len(value) > 128:
            raise ValueError(f"{key} is required (a string of at most 128 characters)")
        out[key] = value.strip()
    currency = out["currency"]
    if len(currency) != 3 or not (currency.isascii() and currency.isalpha() and currency.isupper()):
        raise ValueError("currency must be a three-letter upper-case code")
    raw_amount = payload.get("amount")
    if not isinstance(raw_amount, str):
        raise ValueError('amount must be a decimal string such as "12.34"')
    try:
        amount = Decimal(raw_amount)
    except InvalidOperation as exc:
        raise ValueError('amount must be a decimal string such as "12.34"') from exc
    if not amount.is_finite() or amount <= 0 or amount.as_tuple().exponent < -3:
        raise ValueError("amount must be positive with at most three decimals")
    out["amount"] = amount
    return out


# --- HTTP ---------------------------------------------------------------------------------------


class _BadBody(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sandbox: SandboxProvider
    stopping: threading.Event


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.1 keeps connections alive, as real providers do; clients pool them.
    protocol_version = "HTTP/1.1"
    server_version = "SandboxPSP/1"
    # Idle keep-alive connections are dropped after this, so handler threads do not linger
    # after clients go away (it bounds socket reads, not the deliberate hangs).
    timeout = 15

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle's algorithm and
        # delayed ACKs add 40 ms to every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("sandbox: %s " + format, self.address_string(), *args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        sandbox = self.server.sandbox
        path = urlsplit(self.path).path
        try:
            body = self._read_body() if method == "POST" else b""
        except _BadBody as exc:
            # The unread rest of the body would be parsed as the next request: hang up.
            self.close_connection = True
            self._send(Reply(exc.status, {"error": "invalid_request", "message": str(exc)}))
            return

        if path == "/healthz" and method == "GET":
            self._send(Reply(200, {"status": "ok"}))
        elif path == "/v1/control":
            if method == "GET":
                self._send(Reply(200, sandbox.control()))
            else:
                try:
                    sandbox.set_knobs(_json(body))
                except ValueError as exc:
                    self._send(Reply(400, {"error": "invalid_knobs", "message": str(exc)}))
                else:
                    self._send(Reply(200, sandbox.control()))
        elif path == "/v1/payments" and method == "POST":
            self._faulty(lambda: sandbox.create(_json_or_none(body)))
        elif path.startswith("/v1/payments/") and method == "GET":
            ref = unquote(path[len("/v1/payments/") :])
            if not ref or "/" in ref:
                self._send(Reply(404, {"error": "not_found", "message": "no such endpoint"}))
            else:
                self._faulty(lambda: sandbox.get(ref))
        elif path in ("/healthz", "/v1/control", "/v1/payments") or path.startswith("/v1/payments/"):
            self._send(Reply(405, {"error": "method_not_allowed"}))
        else:
            self._send(Reply(404, {"error": "not_found", "message": "no such endpoint"}))

    def _faulty(self, handle: Callable[[], Reply]) -> None:
        """Apply the scenario's latency and faults around one payments request."""
        sandbox = self.server.sandbox
        latency = sandbox.knobs.latency_ms
        if latency and self.server.stopping.wait(latency / 1000):
            return
        error, hang, malformed = sandbox.draw_faults()
        if error is not None:
            # Refused before any processing, as a real 5xx from an overloaded gateway would be.
            sandbox.count("requests_failed")
            self._send(Reply(error, {"error": "internal_error", "message": "simulated failure"}))
            return
        reply: Reply = handle()
        if hang:
            # Processed (a create really creates) but the answer comes too late: the client
            # cannot know whether money moved, which is the "unknown" case we must handle.
            sandbox.count("requests_hung")
            self.server.stopping.wait(sandbox.knobs.hang_seconds)
            self.close_connection = True
        elif malformed and reply.status < 300:
            sandbox.count("requests_malformed")
            # Cut off mid-object, like a proxy that dropped the rest of the answer.
            reply = Reply(200, raw=b'{"provider_reference": "sbx_cut", "status": ')
        self._send(reply)

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding"):
            raise _BadBody(411, "chunked bodies are not supported; send content-length")
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError as exc:
            raise _BadBody(400, "bad content-length") from exc
        if length < 0:
            raise _BadBody(400, "bad content-length")
        if length > MAX_REQUEST_BYTES:
            raise _BadBody(413, "body too large")
        return self.rfile.read(length) if length else b""

    def _send(self, reply: Reply) -> None:
        try:
            self.send_response(reply.status, HTTPStatus(reply.status).phrase)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(reply.body)))
            if self.close_connection:
                self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a hang longer than its timeout): nothing to tell it.
            self.close_connection = True


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"{}")
    except ValueError as exc:
        raise ValueError("body is not valid JSON") from exc


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


class SandboxServer:
    """The sandbox's HTTP server plus its callback delivery thread."""

    def __init__(
        self,
        knobs: Knobs | Mapping[str, Any] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        webhook_url: str | None = None,
        webhook_secrets: str | Sequence[str] | None = None,
    ) -> None:
        if isinstance(knobs, Mapping):
            knobs = Knobs().updated(knobs)
        self.sandbox = SandboxProvider(knobs)
        self.host = host
        self.requested_port = port
        self.webhook_url = webhook_url
        if isinstance(webhook_secrets, str):
            webhook_secrets = [webhook_secrets]
        if webhook_secrets is None:
            default = default_webhook_secret()
            webhook_secrets = [default] if default else []
        self.webhook_secrets = [s for s in webhook_secrets if s]
        if webhook_url and not self.webhook_secrets:
            raise ValueError(f"callbacks need a signing secret: set {SECRET_ENV}")
        for secret in self.webhook_secrets:
            signing.decode_secret(secret)
        self.stopping = threading.Event()
        self._httpd: _Server | None = None
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the sandbox is not running")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> int:
        """Bind, serve in background threads, and return the bound port."""
        httpd = _Server((self.host, self.requested_port), _Handler)
        httpd.sandbox = self.sandbox
        httpd.stopping = self.stopping
        self._httpd = httpd
        self._threads = [
            threading.Thread(
                target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="sandbox-http", daemon=True
            ),
            threading.Thread(target=self._deliver_loop, name="sandbox-callbacks", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self.port

    def stop(self) -> None:
        """Stop serving and delivering; wakes requests that are hanging on purpose."""
        self.stopping.set()
        self.sandbox.changed.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=CALLBACK_TIMEOUT + 1)
        self._threads = []

    def __enter__(self) -> SandboxServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_knobs(self, **values: Any) -> Knobs:
        return self.sandbox.set_knobs(values)

    def _deliver_loop(self) -> None:
        with httpx.Client(timeout=CALLBACK_TIMEOUT, headers={"user-agent": "SandboxPSP/1"}) as client:
            while not self.stopping.is_set():
                # Cleared before the work, so a wake-up that arrives during it is not lost.
                self.sandbox.changed.clear()
                for delivery in self.sandbox.take_due():
                    if self.stopping.is_set():
                        break
                    self._deliver(client, delivery)
                next_wake = self.sandbox.advance()
                # Sleep until the next deadline, but wake on any new payment or knob change;
                # the cap keeps the loop honest if a clock or a wake-up is missed.
                timeout = 0.5 if next_wake is None else min(max(next_wake - time.monotonic(), 0.005), 0.5)
                self.sandbox.changed.wait(timeout)

    def _deliver(self, client: httpx.Client, delivery: Delivery) -> None:
        delivery.attempts += 1
        if not self.webhook_url:
            self.sandbox.count("callbacks_unsent")
            return
        headers = signing.sign_headers(self.webhook_secrets, delivery.event_id, delivery.body)
        headers["content-type"] = "application/json"
        try:
            response = client.post(self.webhook_url, content=delivery.body, headers=headers)
            ok = 200 <= response.status_code < 300
            outcome = str(response.status_code)
        except httpx.HTTPError as exc:
            ok = False
            outcome = type(exc).__name__
        logger.info(
            "sandbox: callback %s %s for %s -> %s (attempt %d)",
            delivery.event_id,
            delivery.event_type,
            delivery.provider_reference,
            outcome,
            delivery.attempts,
        )
        self.sandbox.delivery_done(delivery, ok=ok)


def default_webhook_secret() -> str | None:
    """The signing secret: Django's SANDBOX_WEBHOOK_SECRET when settings are available (it
    already falls back to the environment and a dev-only default), else the environment."""
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        try:
            from django.conf import settings
            from django.core.exceptions import ImproperlyConfigured

            try:
                value = getattr(settings, "SANDBOX_WEBHOOK_SECRET", None)
            except ImproperlyConfigured:
                value = None
            if value:
                return str(value)
        except ImportError:
            pass
    return os.environ.get(SECRET_ENV) or None


# --- command line ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sandbox's flags; shared by `manage.py sandbox_provider` and `python -m`."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to bind, 0 for any (default %(default)s)")
    parser.add_argument(
        "--webhook-url", default=None, help="where to POST signed callbacks (none: callbacks are not sent)"
    )
    defaults = Knobs()
    for knob in fields(Knobs):
        kind = int if knob.name in _INTS or knob.name == "seed" else float
        parser.add_argument(
            "--" + knob.name.replace("_", "-"),
            dest=knob.name,
            type=kind,
            default=None,
            help=f"{KNOB_HELP[knob.name]} (default {getattr(defaults, knob.name)})",
        )


def knobs_from_options(options: Mapping[str, Any]) -> Knobs:
    return Knobs().updated({k.name: options[k.name] for k in fields(Knobs) if options.get(k.name) is not None})


def serve(options: Mapping[str, Any], *, out: Any = None) -> None:
    """Run until SIGTERM or SIGINT, then stop cleanly."""
    write = out or (lambda text: print(text, flush=True))
    server = SandboxServer(
        knobs_from_options(options),
        host=options.get("host") or "127.0.0.1",
        port=options.get("port", DEFAULT_PORT),
        webhook_url=options.get("webhook_url"),
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        port = server.start()
        write(f"Sandbox payment provider listening on http://{server.host}:{port}")
        write(f"  callbacks: {server.webhook_url or 'off (no --webhook-url)'}")
        write(f"  knobs: {json.dumps(asdict(server.sandbox.knobs))}")
        # serve_forever runs in a thread; the main thread only waits, so signal handlers run
        # promptly and shutdown() is never called from the serving thread (it would deadlock).
        while not stop.wait(0.5):
            pass
        write("Sandbox payment provider stopping")
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sandbox", description="Run the sandbox payment provider.")
    add_arguments(parser)
    options = vars(parser.parse_args(argv))
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(message)s")
    try:
        knobs_from_options(options)
    except ValueError as exc:
        parser.error(str(exc))
    serve(options)


if __name__ == "__main__":
    main()
