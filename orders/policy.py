"""Re-check schedules: which policy applies to an attempt and when its next check is due."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from orders.models import RecheckPolicy, default_pending_delays, default_unknown_delays
from orders.states import AttemptStatus

BUILT_IN = RecheckPolicy(pending_delays=default_pending_delays(), unknown_delays=default_unknown_delays())


class PolicyBook:
    """The policies of every provider, loaded once per batch (one query)."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, int | None], RecheckPolicy] = {
            (p.provider, p.merchant_id): p for p in RecheckPolicy.objects.all()
        }

    def for_attempt(self, provider: str, merchant_id: int | None) -> RecheckPolicy:
        return self._by_key.get((provider, merchant_id)) or self._by_key.get((provider, None)) or BUILT_IN


def delays_for(policy: RecheckPolicy, status: str) -> list[int]:
    # "pending" means the provider answered and is waiting on the customer or the bank;
    # everything else open (initiated, unknown) means we lack an answer, which is re-asked sooner.
    return policy.pending_delays if status == AttemptStatus.PENDING else policy.unknown_delays


def next_check_at(
    policy: RecheckPolicy, *, status: str, checks_done: int, now: datetime, rng: random.Random | None = None
) -> datetime | None:
    """When to check next after `checks_done` checks, or None when the schedule is used up."""
    delays = delays_for(policy, status)
    if checks_done >= len(delays):
        return None
    base = float(delays[checks_done])
    spread = base * policy.jitter
    seconds = base + (rng or random).uniform(-spread, spread)
    return now + timedelta(seconds=max(1.0, seconds))


def first_check_at(provider: str, merchant_id: int | None, status: str, *, now: datetime) -> datetime | None:
    """When a new attempt in `status` should be checked for the first time."""
    return next_check_at(PolicyBook().for_attempt(provider, merchant_id), status=status, checks_done=0, now=now)
