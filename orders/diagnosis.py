"""Why an order is unreturned: a pure function from an order's evidence to one cause.

`diagnose` never touches the database. `orders.evidence.gather_evidence` loads the
evidence of many orders in a constant number of queries; the sweep, the admin and the
API call `diagnose` on it, so every screen explains an order the same way.

Candidates
----------
An order is unreturned when its status still owes an outcome (`submitted`,
`payment_pending`, `paid`, or `payment_failed`, which rests until the customer retries)
and `now - status_changed_at >= merchant.stuck_after`. Anything else gets `None`,
except the two money causes (1 and 2 below): they are raised whatever the status and
age, because money is wrong even on a confirmed or young order.

Rules, first match wins
-----------------------
Most specific and most money-relevant first. "Open attempt" is one in `initiated`,
`pending` or `unknown`; "answer" is a check that got a reply (`error_kind` none);
"unpaid" is `submitted`, `payment_pending` or `payment_failed`.

| #  | cause                    | when (review: needs_review)                                       |
| -- | ------------------------ | ----------------------------------------------------------------- |
| 1  | duplicate_payment        | 2+ attempts took money: `succeeded`, or open with the latest      |
|    |                          | answer `succeeded`. Any status, any age. Review: always.          |
| 2  | amount_mismatch          | a succeeded attempt, or an answer (not failed/expired/cancelled)  |
|    |                          | about an attempt that did not end without money, carries another |
|    |                          | amount or currency than the order. Any status, any age. Review:   |
|    |                          | always.                                                           |
|    | (gate)                   | not a candidate (see above): `None`                               |
| 3  | callback_lost            | an open attempt's latest answer is final and no signed callback   |
|    |                          | came for it                                                       |
| 4  | processing_error         | the same but a signed callback came (received, not applied); or   |
|    |                          | an attempt succeeded while the order is still unpaid              |
| 5  | processing_error         | paid; the latest confirmation failure has no validation errors    |
| 6  | invalid_customer_data    | paid; the latest confirmation failure has validation errors       |
| 7  | provider_outage          | unpaid; an open attempt's provider is in `outage_providers`.      |
|    |                          | Review: if exhausted (7-10).                                      |
| 8  | provider_unreachable     | unpaid; the newest open attempt's last 2+ checks all failed with  |
|    |                          | a timeout, a connection error or HTTP 5xx/429 (or no status)      |
| 9  | result_unknown           | unpaid; the newest open attempt is `unknown` or `initiated`, or   |
|    |                          | its latest check failed (any error)                               |
| 10 | awaiting_customer_action | unpaid; the newest open attempt is `pending`                      |
| 11 | payment_declined         | unpaid; no open attempt; the newest is failed/expired/cancelled   |
| 12 | no_payment_started       | unpaid; no attempt at all                                         |
| 13 | no_access                | access reports exist (in practice: a paid order without any       |
|    |                          | confirmation failure)                                             |
| 14 | processing_error         | fallback: paid and not confirmed in time with no error recorded,  |
|    |                          | or records no rule explains; every open order past its threshold  |
|    |                          | gets a cause                                                      |

"Exhausted" means the re-check schedule is used up: the order already has `needs_review`
(set by the re-check engine) or the attempt was checked `review_threshold_checks` times,
and an open attempt has no `next_check_at` left.

Rules 7-11 look at unpaid orders only: once an order is paid, a second attempt still
waiting at the provider is not what keeps the order from its customer.

A money problem a person already resolved (`money_reviewed_at`, the latest resolution
of `duplicate_payment` or `amount_mismatch`) is not raised again unless new money
evidence (a success or an answer) arrived after it; attempts never leave `succeeded`,
so without this a refunded duplicate would be flagged forever.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NotRequired, TypedDict

from django.utils import timezone
from django.utils.translation import get_language, gettext_noop, ngettext
from django.utils.translation import gettext as _gettext

from orders.causes import Cause, category_of
from orders.states import ATTEMPT_OPEN, AttemptStatus, OrderStatus

# The statuses the diagnosis considers: every order still owed an outcome. payment_failed is
# here although it rests: it waits for the customer to retry, so the customer is still owed news.
CANDIDATE_STATUSES: frozenset[str] = frozenset(
    {OrderStatus.SUBMITTED, OrderStatus.PAYMENT_PENDING, OrderStatus.PAID, OrderStatus.PAYMENT_FAILED}
)
UNPAID_STATUSES: frozenset[str] = frozenset(
    {OrderStatus.SUBMITTED, OrderStatus.PAYMENT_PENDING, OrderStatus.PAYMENT_FAILED}
)
MONEY_CAUSES: frozenset[str] = frozenset({Cause.DUPLICATE_PAYMENT, Cause.AMOUNT_MISMATCH})
# Causes that wait on the provider: an exhausted schedule turns them into a review.
WAITING_CAUSES: frozenset[str] = frozenset(
    {Cause.PROVIDER_OUTAGE, Cause.PROVIDER_UNREACHABLE, Cause.RESULT_UNKNOWN, Cause.AWAITING_CUSTOMER_ACTION}
)
# How many recent checks per attempt the evidence carries.
RECENT_CHECKS = 5
# A streak of this many failed checks means the provider cannot be reached, not one bad answer.
UNREACHABLE_STREAK = 2
NETWORK_ERROR_KINDS: frozenset[str] = frozenset({"timeout", "connection", "http_error"})
# Results the provider cannot take back.
FINAL_REPORTS: frozenset[str] = frozenset(
    {AttemptStatus.SUCCEEDED, AttemptStatus.FAILED, AttemptStatus.EXPIRED, AttemptStatus.CANCELLED}
)
# Money that did not move cannot be a wrong amount of money: neither a report of these
# statuses nor any check of an attempt that ended in one is evidence of a mismatch.
NO_MONEY_STATUSES: frozenset[str] = frozenset({AttemptStatus.FAILED, AttemptStatus.EXPIRED, AttemptStatus.CANCELLED})


# --- evidence ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckEvidence:
    """One question to the provider and what came back."""

    source: str
    reported_status: str
    reported_amount: Decimal | None
    reported_currency: str
    error_kind: str
    http_status: int | None
    checked_at: datetime

    @property
    def answered(self) -> bool:
        return self.error_kind == "none"

    @property
    def network_failure(self) -> bool:
        if self.error_kind in ("timeout", "connection"):
            return True
        # 4xx other than 429 is our request being wrong, not the provider being away.
        return self.error_kind == "http_error" and (
            self.http_status is None or self.http_status >= 500 or self.http_status == 429
        )


class ConfirmationFailure(TypedDict):
    """The data of one `confirmation_failed` event, plus when it happened."""

    error: str
    validation: NotRequired[dict[str, str]]  # field -> message, for invalid customer data
    at: NotRequired[datetime]


@dataclass(frozen=True)
class AttemptEvidence:
    id: int
    provider: str
    status: str
    amount: Decimal
    currency: str
    created_at: datetime
    provider_reference: str = ""
    status_changed_at: datetime | None = None
    failure_code: str = ""
    action_required: str = ""
    check_count: int = 0
    next_check_at: datetime | None = None
    # Any signed (signature_valid) callback linked to this attempt.
    has_callback: bool = False
    # At most RECENT_CHECKS; stored newest first whatever order they are given in.
    recent_checks: Sequence[CheckEvidence] = ()

    def __post_init__(self) -> None:
        # Sorted once here so the rules can read "the latest" without sorting again.
        ordered = tuple(sorted(self.recent_checks, key=lambda c: c.checked_at, reverse=True))
        object.__setattr__(self, "recent_checks", ordered)

    @property
    def is_open(self) -> bool:
        return self.status in ATTEMPT_OPEN

    @property
    def label(self) -> str:
        # Staff search by the provider's reference; our id is the fallback before the provider gave one.
        return self.provider_reference or f"#{self.id}"

    def checks(self) -> Sequence[CheckEvidence]:
        """Recent checks, newest first."""
        return self.recent_checks

    def latest_check(self) -> CheckEvidence | None:
        checks = self.checks()
        return checks[0] if checks else None

    def latest_answer(self) -> CheckEvidence | None:
        return next((c for c in self.checks() if c.answered), None)

    def network_failure_streak(self) -> list[CheckEvidence]:
        """The newest checks that all failed to reach the provider, newest first."""
        streak: list[CheckEvidence] = []
        for check in self.checks():
            if not check.network_failure:
                break
            streak.append(check)
        return streak

    def captured_at(self) -> datetime | None:
        """When this attempt is known to have taken money, or None."""
        if self.status == AttemptStatus.SUCCEEDED:
            return self.status_changed_at or self.created_at
        answer = self.latest_answer()
        if self.is_open and answer is not None and answer.reported_status == AttemptStatus.SUCCEEDED:
            return answer.checked_at
        return None


@dataclass(frozen=True)
class OrderEvidence:
    order_id: int
    stuck_after: timedelta
    status: str
    status_changed_at: datetime
    submitted_at: datetime
    amount: Decimal
    currency: str
    reference: str = ""
    needs_review: bool = False
    # Stored newest first whatever order they are given in.
    attempts: Sequence[AttemptEvidence] = ()
    # Newest first, at most a few; `confirmation_failure_count` is the total.
    confirmation_failures: Sequence[ConfirmationFailure] = ()
    confirmation_failure_count: int = 0
    access_reports: int = 0
    # The latest time a person resolved a money cause on this order.
    money_reviewed_at: datetime | None = None
    _open: tuple[AttemptEvidence, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        # Sorted once here: every rule asks for "the newest (open) attempt".
        ordered = tuple(sorted(self.attempts, key=lambda a: (a.created_at, a.id), reverse=True))
        object.__setattr__(self, "attempts", ordered)
        object.__setattr__(self, "_open", tuple(a for a in ordered if a.is_open))

    def sorted_attempts(self) -> Sequence[AttemptEvidence]:
        """Attempts, newest first."""
        return self.attempts

    def open_attempts(self) -> Sequence[AttemptEvidence]:
        """Attempts still waiting for the provider, newest first."""
        return self._open

    def failure_count(self) -> int:
        return max(self.confirmation_failure_count, len(self.confirmation_failures))


@dataclass(frozen=True)
class Diagnosis:
    cause: str
    category: str
    summary: str
    recommended_action: str
    automatic: str
    needs_review: bool
    evidence: dict[str, Any] = field(default_factory=dict)


# --- texts --------------------------------------------------------------------------------------

# Marked with gettext_noop and translated at call time, so the active language of the
# request (or of the task) decides, not the language at import.
RECOMMENDED_ACTION: dict[str, str] = {
    Cause.NO_PAYMENT_STARTED: gettext_noop("Contact the customer, or cancel the order."),
    Cause.AWAITING_CUSTOMER_ACTION: gettext_noop("Remind the customer to complete the payment."),
    Cause.PAYMENT_DECLINED: gettext_noop("Offer the customer another payment method."),
    Cause.INVALID_CUSTOMER_DATA: gettext_noop("Correct the customer's data, then confirm the order."),
    Cause.RESULT_UNKNOWN: gettext_noop(
        "Nothing yet; if the re-check schedule runs out, decide with the evidence whether the order is paid."
    ),
    Cause.PROVIDER_UNREACHABLE: gettext_noop("Watch the provider alert; this order needs nothing yet."),
    Cause.PROVIDER_OUTAGE: gettext_noop("Handle the provider incident rather than single orders."),
    Cause.CALLBACK_LOST: gettext_noop("Nothing: the provider's result is applied automatically."),
    Cause.AMOUNT_MISMATCH: gettext_noop("Compare the amounts with the provider, decide, and document the decision."),
    Cause.DUPLICATE_PAYMENT: gettext_noop("Refund one of the payments."),
    Cause.PROCESSING_ERROR: gettext_noop("Fix the data or the code, then retry the confirmation."),
    Cause.NO_ACCESS: gettext_noop("Use the access explainer and fix the membership."),
}
AUTOMATIC: dict[str, str] = {
    Cause.NO_PAYMENT_STARTED: gettext_noop(
        "The customer is reminded once; the order expires after the merchant's expiry time."
    ),
    Cause.AWAITING_CUSTOMER_ACTION: gettext_noop("The payment is re-checked until the provider's expiry."),
    Cause.PAYMENT_DECLINED: gettext_noop("The order becomes payment failed and the customer is told."),
    Cause.INVALID_CUSTOMER_DATA: gettext_noop("A support ticket is opened to contact the customer."),
    Cause.RESULT_UNKNOWN: gettext_noop("The payment is re-checked on the schedule for unknown results."),
    Cause.PROVIDER_UNREACHABLE: gettext_noop("The payment keeps being re-checked with backoff."),
    Cause.PROVIDER_OUTAGE: gettext_noop("The outage alert fires once per incident; re-checks continue."),
    Cause.CALLBACK_LOST: gettext_noop("The provider's result is applied and the reconciliation is recorded."),
    Cause.AMOUNT_MISMATCH: gettext_noop("Marked for review; the result is never applied automatically."),
    Cause.DUPLICATE_PAYMENT: gettext_noop("Marked for review."),
    Cause.PROCESSING_ERROR: gettext_noop("The confirmation is retried with backoff."),
    Cause.NO_ACCESS: gettext_noop("Nothing is done automatically."),
}
EXHAUSTED_ACTION = gettext_noop(
    "The re-check schedule is used up: decide with the evidence whether the order is paid or failed."
)
EXHAUSTED_AUTOMATIC = gettext_noop("No more checks are scheduled; the order waits for a person.")
NOT_APPLIED_ACTION = gettext_noop("Find out why the result was not applied, then run “check now”.")
NOT_APPLIED_AUTOMATIC = gettext_noop("The result is applied again on the next re-check.")

# Provider codes for the customer's step, in words staff recognize.
ACTION_LABELS: dict[str, str] = {
    "3ds": gettext_noop("3-D Secure"),
    "bank_app": gettext_noop("the confirmation in their bank app"),
    "redirect": gettext_noop("the payment page"),
    "qr_code": gettext_noop("the QR code payment"),
}


_TRANSLATED: dict[tuple[str | None, str], str] = {}


def _(message: str) -> str:
    """gettext, remembered per language: the sweep asks for the same few sentences (and
    templates, formatted afterwards) tens of thousands of times, and each gettext call
    costs several context-local lookups. Named `_` so makemessages finds the strings."""
    key = (get_language(), message)
    text = _TRANSLATED.get(key)
    if text is None:
        text = _TRANSLATED[key] = _gettext(message)
    return text


_fixed = _


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    if timezone.is_aware(moment):
        moment = timezone.localtime(moment)
    return moment.strftime("%Y-%m-%d %H:%M")


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _money(amount: Decimal | None, currency: str) -> str:
    if amount is None:
        return currency or "?"
    return f"{amount} {currency}".strip()


def _status_label(status: str) -> str:
    try:
        return str(AttemptStatus(status).label)
    except ValueError:
        return status


def _order_status_label(status: str) -> str:
    try:
        return str(OrderStatus(status).label)
    except ValueError:
        return status


def _error_label(check: CheckEvidence) -> str:
    if check.error_kind == "timeout":
        return _("timeout")
    if check.error_kind == "connection":
        return _("connection error")
    if check.error_kind == "http_error":
        return _("HTTP %(status)s") % {"status": check.http_status or "?"}
    if check.error_kind == "malformed":
        return _("malformed response")
    if check.error_kind == "not_found":
        return _("payment not found")
    return check.error_kind


def _check_facts(check: CheckEvidence) -> dict[str, Any]:
    return {
        "source": check.source,
        "reported_status": check.reported_status,
        "reported_amount": str(check.reported_amount) if check.reported_amount is not None else None,
        "reported_currency": check.reported_currency,
        "error_kind": check.error_kind,
        "http_status": check.http_status,
        "checked_at": _iso(check.checked_at),
    }


def _attempt_facts(attempt: AttemptEvidence, *, checks: bool = True) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "id": attempt.id,
        "provider": attempt.provider,
        "provider_reference": attempt.provider_reference,
        "status": attempt.status,
        "amount": str(attempt.amount),
        "currency": attempt.currency,
        "failure_code": attempt.failure_code,
        "action_required": attempt.action_required,
        "created_at": _iso(attempt.created_at),
        "check_count": attempt.check_count,
        "next_check_at": _iso(attempt.next_check_at),
        "has_callback": attempt.has_callback,
    }
    if checks:
        facts["recent_checks"] = [_check_facts(c) for c in attempt.checks()]
    return facts


def _attempt_words(attempt: AttemptEvidence) -> dict[str, str]:
    return {"attempt": attempt.label, "provider": attempt.provider}


# --- the rules ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Finding:
    """What a rule found; `diagnose` adds the category, the standard texts and the review flag."""

    cause: str
    summary: str
    facts: dict[str, Any]
    action: str | None = None  # a gettext_noop message replacing the cause's standard one
    automatic: str | None = None


@dataclass(frozen=True)
class _Context:
    evidence: OrderEvidence
    outage_providers: frozenset[str]

    @property
    def unpaid(self) -> bool:
        return self.evidence.status in UNPAID_STATUSES

    @property
    def paid(self) -> bool:
        return self.evidence.status == OrderStatus.PAID


def _after_review(ctx: _Context, moment: datetime | None) -> bool:
    reviewed = ctx.evidence.money_reviewed_at
    return moment is not None and (reviewed is None or moment > reviewed)


def _duplicate_payment(ctx: _Context) -> _Finding | None:
    captured = [(a, a.captured_at()) for a in ctx.evidence.sorted_attempts()]
    captured = [(a, at) for a, at in captured if at is not None]
    if len(captured) < 2 or not any(_after_review(ctx, at) for _a, at in captured):
        return None
    names = ", ".join(_("%(attempt)s at %(provider)s") % _attempt_words(a) for a, _at in reversed(captured))
    summary = ngettext(
        "%(count)d payment succeeded for this order: %(attempts)s.",
        "%(count)d payments succeeded for this order: %(attempts)s.",
        len(captured),
    ) % {"count": len(captured), "attempts": names}
    return _Finding(
        Cause.DUPLICATE_PAYMENT,
        summary,
        {"captured_attempts": [_attempt_facts(a, checks=False) | {"captured_at": _iso(at)} for a, at in captured]},
    )


def _differs(ev: OrderEvidence, amount: Decimal | None, currency: str) -> bool:
    if amount is not None and amount != ev.amount:
        return True
    return bool(currency) and currency != ev.currency


def _mismatch_of(ctx: _Context, attempt: AttemptEvidence) -> tuple[str, datetime, dict[str, Any]] | None:
    """What `attempt` reported that differs from the order: (money, when, facts), or None."""
    ev = ctx.evidence
    if attempt.status in NO_MONEY_STATUSES:
        return None
    succeeded_at = attempt.status_changed_at or attempt.created_at
    if (
        attempt.status == AttemptStatus.SUCCEEDED
        and _differs(ev, attempt.amount, attempt.currency)
        and _after_review(ctx, succeeded_at)
    ):
        return _money(attempt.amount, attempt.currency), succeeded_at, {"source": "attempt"}
    for check in attempt.checks():
        if (
            check.answered
            and check.reported_status not in NO_MONEY_STATUSES
            and _differs(ev, check.reported_amount, check.reported_currency)
            and _after_review(ctx, check.checked_at)
        ):
            reported = _money(check.reported_amount, check.reported_currency or attempt.currency)
            return reported, check.checked_at, {"source": "check", "check": _check_facts(check)}
    return None


def _amount_mismatch(ctx: _Context) -> _Finding | None:
    ev = ctx.evidence
    for attempt in ev.sorted_attempts():
        found = _mismatch_of(ctx, attempt)
        if found is None:
            continue
        reported, when, facts = found
        summary = _(
            "Attempt %(attempt)s at %(provider)s reported %(reported)s on %(when)s, but the order is for %(expected)s."
        ) % {
            **_attempt_words(attempt),
            "reported": reported,
            "when": _when(when),
            "expected": _money(ev.amount, ev.currency),
        }
        facts |= {
            "attempt": _attempt_facts(attempt, checks=False),
            "order_amount": str(ev.amount),
            "order_currency": ev.currency,
        }
        return _Finding(Cause.AMOUNT_MISMATCH, summary, facts)
    return None


def _final_answer(attempt: AttemptEvidence) -> CheckEvidence | None:
    answer = attempt.latest_answer()
    if attempt.is_open and answer is not None and answer.reported_status in FINAL_REPORTS:
        return answer
    return None


def _callback_lost(ctx: _Context) -> _Finding | None:
    for attempt in ctx.evidence.open_attempts():
        answer = _final_answer(attempt)
        if answer is None or attempt.has_callback:
            continue
        summary = _(
            "The provider reported “%(status)s” for attempt %(attempt)s at %(provider)s on %(checked_at)s, "
            "but no valid callback was received for it."
        ) % {
            **_attempt_words(attempt),
            "status": _status_label(answer.reported_status),
            "checked_at": _when(answer.checked_at),
        }
        return _Finding(
            Cause.CALLBACK_LOST, summary, {"attempt": _attempt_facts(attempt), "answer": _check_facts(answer)}
        )
    return None


def _result_not_applied(ctx: _Context) -> _Finding | None:
    ev = ctx.evidence
    for attempt in ev.open_attempts():
        answer = _final_answer(attempt)
        if answer is None:
            continue
        # Only attempts with a signed callback are left: rule 3 took the others.
        summary = _(
            "The provider reported “%(status)s” for attempt %(attempt)s at %(provider)s and a signed callback "
            "arrived, but the result was not applied."
        ) % {**_attempt_words(attempt), "status": _status_label(answer.reported_status)}
        return _Finding(
            Cause.PROCESSING_ERROR,
            summary,
            {"reason": "result_not_applied", "attempt": _attempt_facts(attempt), "answer": _check_facts(answer)},
            action=NOT_APPLIED_ACTION,
            automatic=NOT_APPLIED_AUTOMATIC,
        )
    if ctx.unpaid:
        succeeded = next((a for a in ev.sorted_attempts() if a.status == AttemptStatus.SUCCEEDED), None)
        if succeeded is not None:
            summary = _("Attempt %(attempt)s at %(provider)s succeeded, but the order is still “%(status)s”.") % {
                **_attempt_words(succeeded),
                "status": _order_status_label(ev.status),
            }
            return _Finding(
                Cause.PROCESSING_ERROR,
                summary,
                {"reason": "success_not_applied", "attempt": _attempt_facts(succeeded, checks=False)},
                action=NOT_APPLIED_ACTION,
                automatic=NOT_APPLIED_AUTOMATIC,
            )
    return None


def _latest_failure(ev: OrderEvidence) -> ConfirmationFailure | None:
    failures = list(ev.confirmation_failures)
    if not failures:
        return None
    # Newest first when the time is known; otherwise trust the given order (newest first).
    if all("at" in f for f in failures):
        failures.sort(key=lambda f: f["at"], reverse=True)
    return failures[0]


def _failure_facts(ev: OrderEvidence, failure: ConfirmationFailure) -> dict[str, Any]:
    return {
        "confirmation_failures": ev.failure_count(),
        "latest_error": failure.get("error", ""),
        "validation": dict(failure.get("validation") or {}),
        "latest_at": _iso(failure.get("at")),
    }


def _confirmation_failed(ctx: _Context) -> _Finding | None:
    ev = ctx.evidence
    failure = _latest_failure(ev)
    if not ctx.paid or failure is None or failure.get("validation"):
        return None
    count = ev.failure_count()
    summary = ngettext(
        "The order is paid, but its confirmation failed %(count)d time; latest error: %(error)s.",
        "The order is paid, but its confirmation failed %(count)d times; latest error: %(error)s.",
        count,
    ) % {"count": count, "error": failure.get("error") or _("none recorded")}
    return _Finding(Cause.PROCESSING_ERROR, summary, {"reason": "confirmation_failed", **_failure_facts(ev, failure)})


def _invalid_customer_data(ctx: _Context) -> _Finding | None:
    ev = ctx.evidence
    failure = _latest_failure(ev)
    if not ctx.paid or failure is None or not failure.get("validation"):
        return None
    problems = "; ".join(f"{name}: {message}" for name, message in sorted(failure["validation"].items()))
    summary = _(
        "The order is paid, but its confirmation was refused because of the customer's data (%(problems)s)."
    ) % {"problems": problems}
    return _Finding(Cause.INVALID_CUSTOMER_DATA, summary, _failure_facts(ev, failure))


def _provider_outage(ctx: _Context) -> _Finding | None:
    if not ctx.unpaid:
        return None
    attempt = next((a for a in ctx.evidence.open_attempts() if a.provider in ctx.outage_providers), None)
    if attempt is None:
        return None
    summary = _(
        "Provider %(provider)s has many payments stuck right now (an outage); attempt %(attempt)s of this order "
        "is one of them."
    ) % _attempt_words(attempt)
    return _Finding(
        Cause.PROVIDER_OUTAGE, summary, {"attempt": _attempt_facts(attempt), "outage_provider": attempt.provider}
    )


def _newest_open(ctx: _Context) -> AttemptEvidence | None:
    if not ctx.unpaid:
        return None
    attempts = ctx.evidence.open_attempts()
    return attempts[0] if attempts else None


def _provider_unreachable(ctx: _Context) -> _Finding | None:
    attempt = _newest_open(ctx)
    if attempt is None:
        return None
    streak = attempt.network_failure_streak()
    if len(streak) < UNREACHABLE_STREAK:
        return None
    # Distinct errors in order of appearance, newest first, so the sentence names each once.
    errors = ", ".join(dict.fromkeys(_error_label(c) for c in streak))
    summary = ngettext(
        "The last %(count)d check of attempt %(attempt)s at %(provider)s failed with: %(errors)s "
        "(latest %(checked_at)s).",
        "The last %(count)d checks of attempt %(attempt)s at %(provider)s failed with: %(errors)s "
        "(latest %(checked_at)s).",
        len(streak),
    ) % {**_attempt_words(attempt), "count": len(streak), "errors": errors, "checked_at": _when(streak[0].checked_at)}
    return _Finding(
        Cause.PROVIDER_UNREACHABLE, summary, {"attempt": _attempt_facts(attempt), "failed_checks": len(streak)}
    )


def _result_unknown(ctx: _Context) -> _Finding | None:
    attempt = _newest_open(ctx)
    if attempt is None:
        return None
    latest = attempt.latest_check()
    words = _attempt_words(attempt)
    if latest is not None and not latest.answered:
        summary = _(
            "The latest check of attempt %(attempt)s at %(provider)s failed with: %(error)s (%(checked_at)s)."
        ) % {
            **words,
            "error": _error_label(latest),
            "checked_at": _when(latest.checked_at),
        }
    elif attempt.status == AttemptStatus.UNKNOWN and attempt.check_count == 0:
        summary = (
            _(
                "Nobody knows yet whether attempt %(attempt)s at %(provider)s took the money; "
                "it has not been checked yet."
            )
            % words
        )
    elif attempt.status == AttemptStatus.UNKNOWN:
        summary = ngettext(
            "Nobody knows yet whether attempt %(attempt)s at %(provider)s took the money; "
            "it was checked %(count)d time.",
            "Nobody knows yet whether attempt %(attempt)s at %(provider)s took the money; "
            "it was checked %(count)d times.",
            attempt.check_count,
        ) % {**words, "count": attempt.check_count}
    elif attempt.status == AttemptStatus.INITIATED:
        summary = _(
            "Attempt %(attempt)s at %(provider)s was started on %(started_at)s, but the provider never confirmed "
            "that it received it."
        ) % {**words, "started_at": _when(attempt.created_at)}
    else:
        return None
    return _Finding(Cause.RESULT_UNKNOWN, summary, {"attempt": _attempt_facts(attempt)})


def _awaiting_customer_action(ctx: _Context) -> _Finding | None:
    attempt = _newest_open(ctx)
    if attempt is None or attempt.status != AttemptStatus.PENDING:
        return None
    words = {**_attempt_words(attempt), "started_at": _when(attempt.created_at)}
    if attempt.action_required:
        label = ACTION_LABELS.get(attempt.action_required)
        summary = _(
            "Attempt %(attempt)s at %(provider)s (started %(started_at)s) is pending until the customer completes "
            "%(action)s."
        ) % {**words, "action": _(label) if label else attempt.action_required}
    else:
        summary = (
            _(
                "Attempt %(attempt)s at %(provider)s (started %(started_at)s) is pending at the provider, waiting for "
                "the customer."
            )
            % words
        )
    return _Finding(Cause.AWAITING_CUSTOMER_ACTION, summary, {"attempt": _attempt_facts(attempt)})


def _payment_declined(ctx: _Context) -> _Finding | None:
    ev = ctx.evidence
    attempts = ev.sorted_attempts()
    if not ctx.unpaid or not attempts or ev.open_attempts():
        return None
    latest = attempts[0]
    words = _attempt_words(latest)
    if latest.status == AttemptStatus.FAILED and latest.failure_code:
        summary = _("Attempt %(attempt)s at %(provider)s was declined with code “%(code)s”.") % {
            **words,
            "code": latest.failure_code,
        }
    elif latest.status == AttemptStatus.FAILED:
        summary = _("Attempt %(attempt)s at %(provider)s failed without a decline code.") % words
    elif latest.status in (AttemptStatus.EXPIRED, AttemptStatus.CANCELLED):
        summary = _("Attempt %(attempt)s at %(provider)s ended as “%(status)s” and no new payment was started.") % {
            **words,
            "status": _status_label(latest.status),
        }
    else:
        return None
    return _Finding(Cause.PAYMENT_DECLINED, summary, {"attempt": _attempt_facts(latest, checks=False)})


def _no_payment_started(ctx: _Context) -> _Finding | None:
    ev = ctx.evidence
    if not ctx.unpaid or ev.attempts:
        return None
    summary = _("No payment was started since the order was submitted on %(submitted_at)s.") % {
        "submitted_at": _when(ev.submitted_at)
    }
    return _Finding(Cause.NO_PAYMENT_STARTED, summary, {"submitted_at": _iso(ev.submitted_at)})


def _no_access(ctx: _Context) -> _Finding | None:
    count = ctx.evidence.access_reports
    if count <= 0:
        return None
    summary = ngettext(
        "The order was reported missing %(count)d time by someone who cannot see it, "
        "and nothing else explains the delay.",
        "The order was reported missing %(count)d times by people who cannot see it, "
        "and nothing else explains the delay.",
        count,
    ) % {"count": count}
    return _Finding(Cause.NO_ACCESS, summary, {"access_reports": count})


def _fallback(ctx: _Context) -> _Finding:
    ev = ctx.evidence
    if ctx.paid:
        summary = _("The order was paid on %(paid_at)s and has not been confirmed since; no error was recorded.") % {
            "paid_at": _when(ev.status_changed_at)
        }
        return _Finding(Cause.PROCESSING_ERROR, summary, {"reason": "not_confirmed_in_time"})
    # Consistent records never get here; still name a cause so no stuck order goes unlisted.
    summary = _("The order is “%(status)s” and its records match no known cause.") % {
        "status": _order_status_label(ev.status)
    }
    return _Finding(
        Cause.PROCESSING_ERROR,
        summary,
        {"reason": "unexplained", "attempts": [_attempt_facts(a) for a in ev.sorted_attempts()]},
    )


_Rule = Callable[[_Context], "_Finding | None"]
MONEY_RULES: tuple[_Rule, ...] = (_duplicate_payment, _amount_mismatch)
# Evaluated for candidates only, in this order; see the table in the module docstring.
RULES: tuple[_Rule, ...] = (
    _callback_lost,
    _result_not_applied,
    _confirmation_failed,
    _invalid_customer_data,
    _provider_outage,
    _provider_unreachable,
    _result_unknown,
    _awaiting_customer_action,
    _payment_declined,
    _no_payment_started,
    _no_access,
)


def is_candidate(evidence: OrderEvidence, *, now: datetime) -> bool:
    """Whether the order still owes an outcome and has waited at least its merchant's threshold."""
    return evidence.status in CANDIDATE_STATUSES and now - evidence.status_changed_at >= evidence.stuck_after


def schedule_exhausted(evidence: OrderEvidence, *, review_threshold_checks: int | None = None) -> bool:
    """The re-check engine has given up on an open attempt: nothing is scheduled and the
    order was flagged for review (or the attempt reached the threshold of checks)."""
    for attempt in evidence.open_attempts():
        if attempt.next_check_at is not None:
            continue
        if evidence.needs_review:
            return True
        if review_threshold_checks is not None and attempt.check_count >= review_threshold_checks:
            return True
    return False


def diagnose(
    evidence: OrderEvidence,
    *,
    now: datetime,
    outage_providers: frozenset[str] = frozenset(),
    review_threshold_checks: int | None = None,
) -> Diagnosis | None:
    """The cause of an unreturned order, or None when the order is not unreturned.

    `outage_providers` comes from `orders.evidence.detect_outage_providers`, computed once
    per sweep. `review_threshold_checks`, when given, counts an open attempt with that many
    checks and nothing scheduled as an exhausted schedule even before `needs_review` is set.
    """
    ctx = _Context(evidence=evidence, outage_providers=frozenset(outage_providers))
    finding = next((f for rule in MONEY_RULES if (f := rule(ctx)) is not None), None)
    if finding is None:
        if not is_candidate(evidence, now=now):
            return None
        finding = next((f for rule in RULES if (f := rule(ctx)) is not None), None) or _fallback(ctx)

    exhausted = finding.cause in WAITING_CAUSES and schedule_exhausted(
        evidence, review_threshold_checks=review_threshold_checks
    )
    action = EXHAUSTED_ACTION if exhausted else finding.action or RECOMMENDED_ACTION[finding.cause]
    automatic = EXHAUSTED_AUTOMATIC if exhausted else finding.automatic or AUTOMATIC[finding.cause]
    facts: dict[str, Any] = {
        "order_id": evidence.order_id,
        "order_status": evidence.status,
        "status_changed_at": _iso(evidence.status_changed_at),
        "waited_seconds": int((now - evidence.status_changed_at).total_seconds()),
        "stuck_after_seconds": int(evidence.stuck_after.total_seconds()),
        **finding.facts,
    }
    if exhausted:
        facts["schedule_exhausted"] = True
    return Diagnosis(
        cause=str(finding.cause),
        category=str(category_of(finding.cause)),
        summary=finding.summary,
        recommended_action=_fixed(action),
        automatic=_fixed(automatic),
        needs_review=finding.cause in MONEY_CAUSES or exhausted,
        evidence=facts,
    )


def diagnose_many(
    evidence: Mapping[int, OrderEvidence],
    *,
    now: datetime,
    outage_providers: frozenset[str] = frozenset(),
    review_threshold_checks: int | None = None,
) -> dict[int, Diagnosis | None]:
    """`diagnose` for every order of `gather_evidence`'s result, keyed by order id."""
    return {
        order_id: diagnose(
            ev, now=now, outage_providers=outage_providers, review_threshold_checks=review_threshold_checks
        )
        for order_id, ev in evidence.items()
    }
