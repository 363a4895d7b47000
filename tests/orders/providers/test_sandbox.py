"""The sandbox's own rules, without HTTP: replayable outcomes and validated knobs."""

from __future__ import annotations

import json

import pytest

from orders.providers.sandbox import Knobs, SandboxProvider


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def outcomes(seed: int, **knobs: object) -> list[tuple[str, str, str | None]]:
    clock = Clock()
    sandbox = SandboxProvider(Knobs(seed=seed, pending_seconds=5).updated(knobs), clock=clock)
    references = []
    for n in range(20):
        reply = sandbox.create(
            {
                "idempotency_key": f"k{n}",
                "amount": "10.00",
                "currency": "CNY",
                "order_reference": f"o{n}",
                "merchant": "m",
            }
        )
        references.append(json.loads(reply.body)["provider_reference"])
    clock.now += 5
    results = [sandbox.snapshot(ref) for ref in references]
    return [(r["status"], r["amount"], r["failure_code"]) for r in results]


def test_same_seed_same_outcomes() -> None:
    knobs = {"decline_rate": 0.3, "expire_rate": 0.2, "amount_mismatch_rate": 0.2}
    first = outcomes(42, **knobs)
    assert first == outcomes(42, **knobs)
    assert first != outcomes(43, **knobs)
    assert {status for status, _amount, _code in first} == {"succeeded", "failed", "expired"}


def test_fault_knobs_do_not_shift_outcomes() -> None:
    # Faults draw from their own stream, so turning them on replays the same payments.
    assert outcomes(5, decline_rate=0.5) == outcomes(5, decline_rate=0.5, error_rate=0.5, malformed_rate=0.5)


def test_payments_stay_pending_until_their_deadline() -> None:
    clock = Clock()
    sandbox = SandboxProvider(Knobs(seed=1, pending_seconds=5), clock=clock)
    ref = json.loads(
        sandbox.create(
            {"idempotency_key": "k", "amount": "1.00", "currency": "CNY", "order_reference": "o", "merchant": "m"}
        ).body
    )["provider_reference"]
    clock.now += 4.9
    assert sandbox.snapshot(ref)["status"] == "pending"
    clock.now += 0.2
    assert sandbox.snapshot(ref)["status"] == "succeeded"


@pytest.mark.parametrize(
    "values",
    [
        {"error_rate": 1.5},
        {"latency_ms": -1},
        {"timeout_rate": "0.5"},
        {"decline_rate": True},
        {"nosuch": 1},
        {"callback_attempts": 0},
        {"seed": 1.5},
        {"latency_ms": 2.5},
    ],
)
def test_invalid_knobs_are_refused(values: dict) -> None:
    with pytest.raises(ValueError):
        Knobs().updated(values)


@pytest.mark.parametrize(
    "payload",
    [
        None,
        {"amount": "1.00", "currency": "CNY", "order_reference": "o", "merchant": "m"},
        {"idempotency_key": "k", "amount": 1.0, "currency": "CNY", "order_reference": "o", "merchant": "m"},
        {"idempotency_key": "k", "amount": "0", "currency": "CNY", "order_reference": "o", "merchant": "m"},
        {"idempotency_key": "k", "amount": "NaN", "currency": "CNY", "order_reference": "o", "merchant": "m"},
        {"idempotency_key": "k", "amount": "1.00", "currency": "cny", "order_reference": "o", "merchant": "m"},
    ],
)
def test_invalid_create_requests_are_400(payload: object) -> None:
    assert SandboxProvider(Knobs(seed=1)).create(payload).status == 400
