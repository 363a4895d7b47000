"""Staff flows in a real browser against a real demo server (Debian chromium + Playwright)."""

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.server import log_in, manage

pytestmark = pytest.mark.e2e


def open_first_order_with_cause(page, base: str, cause: str, merchant: str = "") -> str:
    page.goto(base + "/admin/")
    link = page.locator(f"a[href*='stuck_cause__exact={cause}']").first
    link.click()
    page.wait_for_url(re.compile(rf".*stuck_cause__exact={cause}.*"))
    if merchant:
        page.goto(page.url + f"&merchant={merchant}")
    page.locator("#result_list tbody tr th a").first.click()
    page.wait_for_url(re.compile(r".*/admin/orders/order/\d+/change/.*"))
    return page.url.split("?")[0]


def mark_paid(page, reference: str, reason: str) -> None:
    page.get_by_role("link", name="Mark paid…").click()
    page.fill("#id_provider_reference", reference)
    page.fill("#id_reason", reason)
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="Yes, I am sure").click()


def test_agent_goes_from_the_dashboard_to_a_stuck_order_and_marks_it_paid(page, demo_site):
    base, _var = demo_site
    log_in(page, base, "agent")
    order_url = open_first_order_with_cause(page, base, "result_unknown")
    expect(page.locator("#diagnosis").get_by_text("Payment result unknown")).to_be_visible()

    mark_paid(page, "BANK-STATEMENT-7731", "Customer sent the bank statement; the provider confirmed by phone.")

    page.wait_for_url(order_url + "*")
    expect(page.get_by_text("Order marked paid; confirmation follows.")).to_be_visible()
    timeline = page.locator("#timeline")
    expect(timeline.get_by_text("the provider confirmed by phone").first).to_be_visible()
    expect(page.locator(".field-status .readonly")).to_have_text(re.compile("Paid|Confirmed"))


def test_a_support_lead_approves_a_four_eyes_payment(browser, demo_site):
    base, var_dir = demo_site
    manage(var_dir, "shell", "-c",
           "from orders.models import Merchant; Merchant.objects.update(mark_paid_approval_above=1)")
    agent = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    log_in(agent, base, "agent")
    order_url = open_first_order_with_cause(agent, base, "awaiting_customer_action")
    mark_paid(agent, "PAYSLIP-0042", "Large order: the customer's bank confirmed the transfer.")
    expect(agent.get_by_text("a second staff member must approve it")).to_be_visible()
    expect(agent.locator("#pending-approval")).to_be_visible()

    lead = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    log_in(lead, base, "lead")
    lead.goto(order_url)
    lead.fill("#id_decision_note", "Checked the transfer in the bank portal.")
    lead.get_by_role("button", name="Approve and mark paid").click()
    expect(lead.get_by_text("Approved: the order is marked paid.")).to_be_visible()
    expect(lead.locator(".field-status .readonly")).to_have_text(re.compile("Paid|Confirmed"))
