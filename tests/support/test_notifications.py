"""The outbox of customer notifications: which order changes queue which email, one row per
event, and a sender that sends every row once, retries failures and survives crashes."""

from __future__ import annotations

import sys
import types
from datetime import timedelta

import pytest
from django.core import mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from orders import services
from orders.causes import Cause
from orders.schedules import SCHEDULES
from orders.signals import order_state_changed
from orders.states import AttemptStatus, OrderStatus
from support import notifications
from support.models import MessageVisibility, Notification, NotificationKind, NotificationStatus, Ticket, TicketMessage
from support.notifications import (
    MAX_ATTEMPTS,
    RETRY_DELAYS,
    SEND_LEASE,
    claim_due_notifications,
    queue_notification,
    queue_ticket_reply,
    retry_notifications,
    send_claimed,
    send_due_notifications,
)
from tests.orders.engine_helpers import ENGINE_ACTOR, flag_order, fresh, new_order, pending_order, run_in_threads
from tests.orders.factories import OrderFactory, StaffUserFactory, UserFactory, order_in_status

Kind = NotificationKind
Status = NotificationStatus


def fake_status_url(order) -> str:
    return f"https://desk.example/track/token-{order.pk}/"


@pytest.fixture(autouse=True)
def status_links(monkeypatch):
    """A predictable status link, whether or not `orders.status_links` exists yet."""
    try:
        import orders.status_links as module
    except ImportError:
        module = types.ModuleType("orders.status_links")
        monkeypatch.setitem(sys.modules, "orders.status_links", module)
    monkeypatch.setattr(module, "status_url", fake_status_url, raising=False)


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run the block's on-commit callbacks (the signal, the confirmation task) at its end."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def rows(order, kind=None):
    qs = Notification.objects.filter(order_id=order.pk)
    if kind:
        qs = qs.filter(kind=kind)
    return list(qs)


def queued(order=None):
    return Notification.objects.create(
        order=order or OrderFactory(),
        kind=Kind.ORDER_CANCELLED,
        dedupe_key=f"test:{Notification.objects.count()}",
        recipient="li.wei@example.com",
        subject="Order cancelled",
        body="Your order was cancelled.",
        next_attempt_at=timezone.now() - timedelta(seconds=1),
    )


# --- which change queues what -----------------------------------------------------------------

pytestmark = pytest.mark.django_db


def test_a_declined_payment_queues_payment_declined(committed):
    with committed():
        order = order_in_status(OrderStatus.PAYMENT_FAILED)

    [row] = rows(order)
    assert row.kind == Kind.PAYMENT_DECLINED
    assert row.recipient == order.customer_email
    assert row.dedupe_key == f"payment_declined:{order.pk}"


def test_a_confirmation_after_the_order_was_unreturned_queues_payment_confirmed(committed):
    order, attempt = pending_order()
    with committed():
        flag_order(order, Cause.RESULT_UNKNOWN)
        services.transition_attempt(attempt=attempt, to=AttemptStatus.SUCCEEDED, actor=ENGINE_ACTOR)
        services.mark_order_paid(attempt=attempt, actor=ENGINE_ACTOR)
        services.confirm_order(order=order.pk, actor=ENGINE_ACTOR)

    assert fresh(order).status == OrderStatus.CONFIRMED
    assert [row.kind for row in rows(order)] == [Kind.PAYMENT_CONFIRMED]


def test_a_confirmation_after_the_flag_was_already_resolved_queues_payment_confirmed(committed):
    order, attempt = pending_order()
    with committed():
        services.transition_attempt(attempt=attempt, to=AttemptStatus.SUCCEEDED, actor=ENGINE_ACTOR)
        services.mark_order_paid(attempt=attempt, actor=ENGINE_ACTOR)
        services.confirm_order(order=order.pk, actor=ENGINE_ACTOR)
    # What the sweep leaves when it unflags an order: resolved, no longer unreturned.
    assert fresh(order).status == OrderStatus.CONFIRMED
    order.refresh_from_db()
    type(order).objects.filter(pk=order.pk).update(resolved_at=timezone.now())

    notifications.queue_for_order_change(
        None, order_id=order.pk, old_status=OrderStatus.PAID, new_status=OrderStatus.CONFIRMED,
        was_unreturned=False, is_unreturned=False, cause="",
    )

    assert [row.kind for row in rows(order)] == [Kind.PAYMENT_CONFIRMED]


def test_a_confirmation_on_time_queues_nothing(committed):
    order, attempt = pending_order()
    with committed():
        services.transition_attempt(attempt=attempt, to=AttemptStatus.SUCCEEDED, actor=ENGINE_ACTOR)
        services.mark_order_paid(attempt=attempt, actor=ENGINE_ACTOR)
        services.confirm_order(order=order.pk, actor=ENGINE_ACTOR)

    assert fresh(order).status == OrderStatus.CONFIRMED
    assert rows(order) == []


@pytest.mark.parametrize("cause", [Cause.AWAITING_CUSTOMER_ACTION, Cause.INVALID_CUSTOMER_DATA])
def test_an_order_unreturned_for_a_cause_the_customer_fixes_queues_action_needed(committed, cause):
    order, _attempt = pending_order()
    with committed():
        flag_order(order, cause)
    assert rows(order) == []  # a flag-only change: the periodic pass queues it

    assert notifications.queue_action_needed_notifications() == 1
    assert notifications.queue_action_needed_notifications() == 0

    [row] = rows(order)
    assert row.kind == Kind.ACTION_NEEDED
    assert row.dedupe_key == f"action_needed:{order.pk}"


def test_an_order_unreturned_for_a_cause_the_customer_cannot_fix_queues_nothing(committed):
    order, _attempt = pending_order()
    with committed():
        flag_order(order, Cause.PROVIDER_OUTAGE)
    notifications.queue_action_needed_notifications()

    assert rows(order) == []


def test_a_cancelled_order_queues_order_cancelled(committed):
    order, _attempt = pending_order()
    with committed():
        services.staff_cancel_order(order=order, reason="customer asked by phone", actor=ENGINE_ACTOR)

    assert [row.kind for row in rows(order)] == [Kind.ORDER_CANCELLED]


def test_an_expired_order_queues_order_expired(committed):
    with committed():
        order = order_in_status(OrderStatus.EXPIRED)

    assert [row.kind for row in rows(order)] == [Kind.ORDER_EXPIRED]


def test_a_new_payment_attempt_queues_nothing(committed):
    with committed():
        order = order_in_status(OrderStatus.PAYMENT_PENDING)

    assert rows(order) == []


def test_the_same_event_reported_twice_makes_one_row():
    order = order_in_status(OrderStatus.CANCELLED)
    event = dict(order_id=order.pk, old_status=OrderStatus.SUBMITTED, new_status=OrderStatus.CANCELLED,
                 was_unreturned=False, is_unreturned=False, cause="", actor_kind="system")

    order_state_changed.send(sender=type(order), **event)
    order_state_changed.send(sender=type(order), **event)

    assert len(rows(order, Kind.ORDER_CANCELLED)) == 1


def test_queueing_an_event_that_has_its_row_returns_none():
    order = OrderFactory()

    first = queue_notification(order=order, kind=Kind.ORDER_EXPIRED)
    second = queue_notification(order=order.pk, kind=Kind.ORDER_EXPIRED)

    assert first is not None and second is None
    assert Notification.objects.count() == 1


def test_queueing_inside_a_transaction_keeps_the_transaction_usable():
    order = OrderFactory()
    with transaction.atomic():
        queue_notification(order=order, kind=Kind.ORDER_EXPIRED)
        assert queue_notification(order=order, kind=Kind.ORDER_EXPIRED) is None
        queue_notification(order=order, kind=Kind.ORDER_CANCELLED)

    assert Notification.objects.count() == 2


def test_an_order_without_customer_email_gets_no_notification():
    order = OrderFactory(customer_email="")

    assert queue_notification(order=order, kind=Kind.ORDER_CANCELLED) is None
    assert Notification.objects.count() == 0


def test_a_notification_is_rendered_as_plain_text_with_the_status_link():
    order = OrderFactory(customer_name="Zoë O'Brien & Sons", reference="ORD-42")

    row = queue_notification(order=order, kind=Kind.PAYMENT_DECLINED)

    assert row.subject == "Your payment for order ORD-42 was declined"
    assert "Hello Zoë O'Brien & Sons," in row.body  # not HTML-escaped
    assert fake_status_url(order) in row.body
    assert order.merchant.name in row.body


@pytest.mark.parametrize("kind", [k for k in Kind.values if k != Kind.TICKET_REPLY])
def test_every_order_kind_has_a_subject_and_a_body_with_the_status_link(kind):
    order = OrderFactory()

    row = queue_notification(order=order, kind=kind)

    assert row.subject and "\n" not in row.subject
    assert fake_status_url(order) in row.body


def test_a_notification_is_written_in_the_site_language(settings):
    settings.LANGUAGE_CODE = "zh-hans"

    row = queue_notification(order=OrderFactory(), kind=Kind.ORDER_EXPIRED)

    assert row.language == "zh-hans"


def test_the_real_status_link_is_an_absolute_track_url(monkeypatch):
    monkeypatch.undo()  # the real orders.status_links, when it exists
    status_links = pytest.importorskip("orders.status_links")
    order = OrderFactory()

    row = queue_notification(order=order, kind=Kind.ORDER_EXPIRED)

    assert status_links.status_url(order) in row.body
    assert "/track/" in row.body


# --- ticket replies ---------------------------------------------------------------------------


def ticket_for(order=None, **fields):
    order = order or OrderFactory()
    return Ticket.objects.create(merchant=order.merchant, order=order, subject="Where is my order?", **fields)


def message_on(ticket, *, visibility=MessageVisibility.PUBLIC, body="We found your payment.", **fields):
    if "author_user" not in fields and "author_email" not in fields:
        fields["author_user"] = StaffUserFactory(first_name="Chen", last_name="Jing")
    return TicketMessage.objects.create(ticket=ticket, visibility=visibility, body=body, **fields)


def test_a_public_reply_is_queued_with_its_text_and_the_status_link():
    ticket = ticket_for(customer_email="buyer@example.com")
    message = message_on(ticket, body="Your payment arrived; the order ships tomorrow.")

    row = queue_ticket_reply(message)

    assert row.kind == Kind.TICKET_REPLY
    assert row.dedupe_key == f"ticket_reply:{message.pk}"
    assert row.recipient == "buyer@example.com"
    assert "Your payment arrived; the order ships tomorrow." in row.body
    assert fake_status_url(ticket.order) in row.body


def test_a_reply_goes_to_the_orders_customer_when_the_ticket_has_no_email():
    ticket = ticket_for()

    row = queue_ticket_reply(message_on(ticket))

    assert row.recipient == ticket.order.customer_email


def test_the_same_reply_queued_twice_makes_one_row():
    message = message_on(ticket_for())

    queue_ticket_reply(message)

    assert queue_ticket_reply(message) is None
    assert Notification.objects.count() == 1


def test_an_internal_note_is_not_emailed():
    assert queue_ticket_reply(message_on(ticket_for(), visibility=MessageVisibility.INTERNAL)) is None
    assert Notification.objects.count() == 0


def test_a_reply_on_a_ticket_without_order_is_not_emailed():
    order = OrderFactory()
    ticket = Ticket.objects.create(merchant=order.merchant, subject="General question", customer_email="a@example.com")

    assert queue_ticket_reply(message_on(ticket)) is None


def test_the_customers_own_message_is_not_emailed_back():
    ticket = ticket_for(customer_email="buyer@example.com")

    assert queue_ticket_reply(message_on(ticket, author_email="Buyer@example.com")) is None


# --- sending ----------------------------------------------------------------------------------


def test_sending_sends_a_due_notification_once_and_marks_it_sent(settings):
    row = queued()

    assert send_due_notifications() == 1

    [email] = mail.outbox
    assert email.to == [row.recipient]
    assert email.subject == row.subject
    assert email.body == row.body
    assert email.from_email == settings.DEFAULT_FROM_EMAIL
    row.refresh_from_db()
    assert row.status == Status.SENT
    assert row.sent_at is not None
    assert row.attempts == 1


def test_sending_again_sends_nothing_more():
    queued()
    send_due_notifications()

    assert send_due_notifications() == 0
    assert len(mail.outbox) == 1


def test_a_notification_not_yet_due_is_not_sent():
    row = queued()
    Notification.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now() + timedelta(minutes=1))

    assert send_due_notifications() == 0
    assert mail.outbox == []


@pytest.fixture
def failing_mail(monkeypatch):
    def refuse(self, fail_silently=False):
        raise ConnectionRefusedError("mail server down")

    monkeypatch.setattr(mail.EmailMessage, "send", refuse)


def test_a_failed_send_is_retried_after_the_first_delay(failing_mail):
    row = queued()
    now = timezone.now()

    assert send_due_notifications(now=now) == 0

    row.refresh_from_db()
    assert row.status == Status.PENDING
    assert row.attempts == 1
    assert row.next_attempt_at == now + RETRY_DELAYS[0]
    assert "mail server down" in row.last_error


def test_failed_sends_back_off_one_five_fifteen_sixty_minutes_then_give_up(failing_mail):
    row = queued()
    now = timezone.now()
    waits = []
    for _ in range(MAX_ATTEMPTS):
        send_due_notifications(now=now)
        row.refresh_from_db()
        if row.status == Status.FAILED:
            break
        waits.append(row.next_attempt_at - now)
        now = row.next_attempt_at

    assert waits == [timedelta(minutes=m) for m in (1, 5, 15, 60)]
    assert row.status == Status.FAILED
    assert row.attempts == MAX_ATTEMPTS
    assert row.next_attempt_at is None


def test_a_retried_send_that_succeeds_clears_the_error(failing_mail, monkeypatch):
    row = queued()
    now = timezone.now()
    send_due_notifications(now=now)
    monkeypatch.undo()

    assert send_due_notifications(now=now + RETRY_DELAYS[0]) == 1
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_error) == (Status.SENT, 2, "")


def test_a_claimed_row_is_not_claimed_again_before_its_lease_ends():
    queued()
    now = timezone.now()
    claim_due_notifications(now=now)  # a sender that then crashed

    assert send_due_notifications(now=now + SEND_LEASE - timedelta(seconds=1)) == 0
    assert mail.outbox == []


def test_a_crashed_senders_row_is_sent_after_its_lease():
    row = queued()
    now = timezone.now()
    claim_due_notifications(now=now)  # a sender that then crashed

    assert send_due_notifications(now=now + SEND_LEASE) == 1
    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.SENT, 2)


def test_a_sender_that_lost_its_claim_does_not_send():
    queued()
    now = timezone.now()
    [stale] = claim_due_notifications(now=now)
    [current] = claim_due_notifications(now=now + SEND_LEASE)  # the lease ran out: taken over

    assert send_claimed(stale, now=now) == "lost"
    assert send_claimed(current, now=now + SEND_LEASE) == "sent"
    assert len(mail.outbox) == 1


def test_a_send_task_retried_after_success_sends_once():
    queued()
    [claim] = claim_due_notifications()

    assert send_claimed(claim) == "sent"
    assert send_claimed(claim) == "lost"
    assert len(mail.outbox) == 1


def test_a_row_whose_sender_stopped_during_the_last_try_is_given_up():
    row = queued()
    Notification.objects.filter(pk=row.pk).update(attempts=MAX_ATTEMPTS - 1)
    now = timezone.now()
    claim_due_notifications(now=now)  # the last try; its sender crashed

    assert send_due_notifications(now=now + SEND_LEASE) == 0
    row.refresh_from_db()
    assert row.status == Status.FAILED
    assert mail.outbox == []


def test_retry_now_makes_a_failed_row_due_at_once():
    row = queued()
    Notification.objects.filter(pk=row.pk).update(status=Status.FAILED, attempts=MAX_ATTEMPTS, next_attempt_at=None)

    assert retry_notifications(notification_ids=[row.pk]) == 1
    assert send_due_notifications() == 1


def test_retry_now_leaves_a_sent_row_alone():
    row = queued()
    send_due_notifications()

    assert retry_notifications(notification_ids=[row.pk]) == 0
    assert fresh(row).status == Status.SENT


def test_the_sender_runs_every_minute():
    [spec] = [s for s in SCHEDULES if s["name"] == "send-notifications"]

    assert spec == {"name": "send-notifications", "func": "support.notifications.send_due_notifications_task",
                    "minutes": 1}


def test_the_send_task_reports_how_many_were_queued_and_sent():
    queued()

    assert notifications.send_due_notifications_task() == "queued=0 sent=1"


# --- admin ------------------------------------------------------------------------------------


def changelist():
    return reverse("admin:support_notification_changelist")


def test_the_outbox_list_is_searched_by_exact_order_reference(admin_client):
    row = queued(OrderFactory(reference="ORD-777"))
    queued(OrderFactory(reference="ORD-7770"))

    response = admin_client.get(changelist(), {"q": "ORD-777"})

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [row]


def test_the_outbox_list_is_searched_by_recipient(admin_client):
    row = queued()

    response = admin_client.get(changelist(), {"q": "LI.WEI@example.com"})

    assert list(response.context["cl"].result_list) == [row]


def test_outbox_rows_cannot_be_added_or_deleted(admin_client):
    row = queued()

    assert admin_client.get(reverse("admin:support_notification_add")).status_code == 403
    assert admin_client.get(reverse("admin:support_notification_delete", args=[row.pk])).status_code == 403


def test_an_outbox_row_opens_read_only(admin_client):
    row = queued()

    response = admin_client.get(reverse("admin:support_notification_change", args=[row.pk]))

    assert response.status_code == 200
    assert response.context["has_change_permission"] is False


def test_retry_now_from_the_admin_makes_a_failed_row_due(admin_client):
    row = queued()
    Notification.objects.filter(pk=row.pk).update(status=Status.FAILED, next_attempt_at=None)

    admin_client.post(changelist(), {"action": "retry_now", "_selected_action": [row.pk]})

    row.refresh_from_db()
    assert row.status == Status.PENDING
    assert row.next_attempt_at <= timezone.now()


def test_retry_now_is_not_offered_without_the_change_permission(client):
    from django.contrib.auth.models import Permission

    user = UserFactory(is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_notification"))
    client.force_login(user)
    row = queued()
    Notification.objects.filter(pk=row.pk).update(status=Status.FAILED, next_attempt_at=None)

    response = client.get(changelist())
    client.post(changelist(), {"action": "retry_now", "_selected_action": [row.pk]})

    assert "retry_now" not in response.context["cl"].model_admin.get_actions(response.wsgi_request)
    assert fresh(row).status == Status.FAILED


# --- PostgreSQL: concurrent senders -----------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_senders_send_each_row_once(on_postgres, monkeypatch):
    sent: list[str] = []
    original = mail.EmailMessage.send

    def record(self, fail_silently=False):
        sent.append(self.extra_headers["X-Notification-Key"])
        return original(self, fail_silently=fail_silently)

    monkeypatch.setattr(mail.EmailMessage, "send", record)
    order = new_order()
    for n in range(40):
        Notification.objects.create(
            order=order, kind=Kind.ORDER_CANCELLED, dedupe_key=f"race:{n}", recipient="a@example.com",
            subject="s", body="b", next_attempt_at=timezone.now() - timedelta(seconds=1),
        )

    outcomes = run_in_threads(*[lambda: send_due_notifications(batch_size=7) for _ in range(4)])

    assert not any(isinstance(o, BaseException) for o in outcomes), outcomes
    assert sum(outcomes) == 40
    assert sorted(sent) == sorted(f"race:{n}" for n in range(40))
    assert Notification.objects.filter(status=Status.SENT).count() == 40


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_same_event_queued_concurrently_makes_one_row(on_postgres):
    order = new_order()

    def queue():
        with transaction.atomic():
            row = queue_notification(order=order.pk, kind=Kind.ORDER_EXPIRED)
            return row.pk if row else None

    outcomes = run_in_threads(*[queue for _ in range(4)])

    assert not any(isinstance(o, BaseException) for o in outcomes), outcomes
    assert Notification.objects.filter(dedupe_key=f"order_expired:{order.pk}").count() == 1
    assert len([o for o in outcomes if o is not None]) == 1
