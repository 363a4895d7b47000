"""Fixtures for the provider layer: a sandbox provider and a callback receiver, both real HTTP
servers on loopback, started on free ports in background threads. No database."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from orders.providers.http import HttpProvider
from orders.providers.sandbox import SandboxServer

SECRET = "whsec_" + base64.b64encode(b"tests-only-webhook-secret-32byte").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"the-previous-webhook-secret-here").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"somebody-else-s-secret-32-bytes!").decode()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


class CallbackReceiver:
    """A stand-in for our webhook endpoint: records every POST and answers 204, or 500 for
    the first `fail_first` requests to make the sandbox redeliver."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.fail_first = 0
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver._cond:
                    receiver.received.append(Received(dict(self.headers.items()), body))
                    failing = len(receiver.received) <= receiver.fail_first
                    receiver._cond.notify_all()
                self.send_response(500 if failing else 204)
                self.send_header("content-length", "0")
                self.end_headers()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/webhooks/sandbox/"

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} callbacks, got {len(self.received)}")
                self._cond.wait(remaining)
            return list(self.received)

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(item.body) for item in self.received]

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    server = CallbackReceiver()
    yield server
    server.stop()


@pytest.fixture
def start_sandbox() -> Iterator[Callable[..., SandboxServer]]:
    """`start_sandbox(pending_seconds=0, ..., webhook_url=...)` -> a running SandboxServer."""
    servers: list[SandboxServer] = []

    def start(
        *, webhook_url: str | None = None, webhook_secrets: list[str] | None = None, **knobs: Any
    ) -> SandboxServer:
        knobs.setdefault("seed", 7)
        # Fast redelivery keeps the retry tests short.
        knobs.setdefault("callback_retry_ms", 50)
        server = SandboxServer(knobs, webhook_url=webhook_url, webhook_secrets=webhook_secrets or [SECRET])
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def make_provider() -> Iterator[Callable[..., HttpProvider]]:
    providers: list[HttpProvider] = []

    def make(base_url: str, **options: Any) -> HttpProvider:
        options.setdefault("webhook_secrets", [SECRET])
        options.setdefault("connect_timeout", 1.0)
        options.setdefault("read_timeout", 2.0)
        provider = HttpProvider(name="sandbox", base_url=base_url, **options)
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        provider.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)
