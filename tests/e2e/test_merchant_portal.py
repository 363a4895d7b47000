"""The merchant portal in a real browser against a real demo server (Debian chromium + Playwright)."""

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e


def log_in_to_portal(page, base: str, username: str) -> None:
    page.goto(base + "/")
    page.wait_for_url(re.compile(r".*/accounts/login/.*"))
    page.fill("#id_username", username)
    page.fill("#id_password", f"{username}-demo")
    page.locator(".login-card button[type=submit]").click()


def test_an_operator_follows_a_cause_to_an_order_checks_it_and_opens_a_ticket(page, demo_site):
    base, _var = demo_site
    log_in_to_portal(page, base, "operator")
    page.wait_for_url(base + "/merchant/jade-leaf-tea/")
    expect(page.get_by_role("heading", name="Unreturned orders")).to_be_visible()

    # The home page lists the causes; each opens the order list filtered by it.
    cause = page.locator("a.cause-row").first
    cause_name = cause.locator(".cause-name").inner_text()
    cause.click()
    page.wait_for_url(re.compile(r".*/merchant/jade-leaf-tea/orders/\?unreturned=true&cause=\w+"))
    code = re.search(r"cause=(\w+)", page.url).group(1)
    expect(page.locator("#id_cause")).to_have_value(code)
    rows = page.locator("table.orders-table tbody tr")
    expect(rows.first).to_be_visible()
    for text in rows.locator(".cause").all_inner_texts():
        assert text == cause_name

    # One order: its diagnosis in plain words and its timeline.
    rows.first.locator("a.ref").click()
    page.wait_for_url(re.compile(r".*/merchant/jade-leaf-tea/orders/\d+/.*"))
    order_url = page.url.split("?")[0]
    expect(page.locator("#diagnosis")).to_contain_text(cause_name)
    expect(page.locator("#diagnosis")).to_contain_text("What you can do")
    expect(page.locator("#timeline .entry").first).to_be_visible()

    # Check now, when a payment waits for an answer: the answer (or the silence) is reported.
    check = page.get_by_role("button", name="Check now")
    if check.count():
        check.click()
        page.wait_for_url(order_url)
        expect(page.locator(".notices .notice").first).to_be_visible()

    # A ticket about this order, prefilled from it.
    page.get_by_role("link", name=re.compile(r"Open a ticket|Open ticket #\d+")).click()
    if "/tickets/new/" in page.url:
        expect(page.locator("#id_subject")).not_to_have_value("")
        page.fill("#id_body", "The customer says the bank took the money; please check.")
        page.get_by_role("button", name="Open the ticket").click()
        page.wait_for_url(re.compile(r".*/merchant/jade-leaf-tea/tickets/\d+/"))
        expect(page.get_by_text(re.compile(r"Ticket #\d+ is open"))).to_be_visible()
        expect(page.locator("#conversation")).to_contain_text("the bank took the money")
    else:  # the order already had an open ticket: the button led straight to it
        expect(page.locator("#conversation")).to_be_visible()


def test_a_viewer_reads_but_has_no_buttons(page, demo_site):
    base, _var = demo_site
    log_in_to_portal(page, base, "viewer")
    page.wait_for_url(base + "/merchant/jade-leaf-tea/")
    page.get_by_role("link", name="Orders", exact=True).click()
    page.locator("table.orders-table a.ref").first.click()
    expect(page.locator("#diagnosis")).to_be_visible()
    expect(page.get_by_role("button", name="Check now")).to_have_count(0)
    expect(page.get_by_role("link", name="Members", exact=True)).to_have_count(0)


def test_a_user_of_two_merchants_switches_between_them(page, demo_site):
    base, _var = demo_site
    log_in_to_portal(page, base, "partner")
    page.wait_for_url(base + "/merchant/")
    page.get_by_role("link", name=re.compile("Panda Mart")).click()
    page.wait_for_url(base + "/merchant/panda-mart/")
    expect(page.get_by_role("link", name="Members", exact=True)).to_be_visible()  # manager here

    page.locator("details.switcher summary").click()
    page.locator("details.switcher").get_by_role("link", name=re.compile("Jade Leaf")).click()
    page.wait_for_url(base + "/merchant/jade-leaf-tea/")
    expect(page.get_by_role("link", name="Members", exact=True)).to_have_count(0)  # operator here


def test_the_portal_speaks_chinese(page, demo_site):
    base, _var = demo_site
    log_in_to_portal(page, base, "manager")
    page.wait_for_url(base + "/merchant/jade-leaf-tea/")
    page.locator(".lang-switch button[value='zh-hans']").click()
    page.wait_for_load_state()
    expect(page.locator("html")).to_have_attribute("lang", "zh-hans")
    page.locator(".lang-switch button[value='en']").click()
    page.wait_for_load_state()
    expect(page.locator("html")).to_have_attribute("lang", "en")
