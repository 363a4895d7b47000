from __future__ import annotations

from django.utils import translation

from orders.labels import choice_labels


def test_labels_follow_the_active_language():
    with translation.override("en"):
        english = choice_labels()["status"]["payment_pending"]
    with translation.override("zh-hans"):
        chinese = choice_labels()["status"]["payment_pending"]

    assert english == "Payment pending"
    assert chinese != english and chinese.strip()


def test_every_cause_has_its_label():
    from orders.causes import Cause

    with translation.override("en"):
        labels = choice_labels()["cause"]

    assert {value: labels[value] for value in Cause.values} == {c.value: str(c.label) for c in Cause}
