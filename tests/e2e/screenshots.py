"""`make screenshots`: the staff pages and the merchant portal of a fresh demo, in English and
Chinese, written to docs/screenshots/ (the README and docs/merchant-portal.md show them)."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.e2e.server import ROOT, browser_available, demo_server, launch_browser, log_in

OUT = ROOT / "docs" / "screenshots"


def shoot(page, name: str, *, full_page: bool = True) -> None:
    path = OUT / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    print(path.relative_to(ROOT))


def switch_language(page, code: str, *, switch: str = ".language-switch") -> None:
    page.locator(f"{switch} button[value='{code}']").click()
    page.wait_for_load_state()


def portal_log_in(page, base: str, username: str) -> None:
    page.goto(base + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"{username}-demo")
    page.locator(".login-card button[type=submit]").click()
    page.wait_for_load_state()


def merchant_portal(browser, base: str) -> None:
    """The merchant portal as the demo operator, on a desktop and on a phone, in both languages."""
    home = base + "/merchant/jade-leaf-tea/"
    for suffix, viewport in (("", {"width": 1400, "height": 1000}), ("-phone", {"width": 390, "height": 844})):
        context = browser.new_context(viewport=viewport)
        page = context.new_page()
        portal_log_in(page, base, "operator")
        page.goto(home)
        shoot(page, f"merchant-home{suffix}")
        page.goto(home + "orders/?unreturned=true&cause=result_unknown")
        shoot(page, f"merchant-orders{suffix}", full_page=False)
        page.locator("table.orders-table a.ref").first.click()
        page.wait_for_load_state()
        shoot(page, f"merchant-order{suffix}")
        page.goto(home)
        switch_language(page, "zh-hans", switch=".lang-switch")
        shoot(page, f"merchant-home-zh-hans{suffix}")
        context.close()


def main() -> int:
    if not browser_available():
        print("Screenshots need Debian's chromium (/usr/bin/chromium) and the playwright package.", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with demo_server(orders=3000) as (base, _var_dir), sync_playwright() as playwright:
        browser = launch_browser(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        log_in(page, base, "agent")
        shoot(page, "dashboard")
        page.goto(base + "/admin/orders/order/?unreturned=yes")
        shoot(page, "worklist", full_page=False)
        page.goto(base + "/admin/orders/order/?stuck_cause__exact=result_unknown")
        page.locator("#result_list tbody tr th a").first.click()
        shoot(page, "order")
        page.get_by_role("link", name="Mark paid…").click()
        page.fill("#id_provider_reference", "BANK-STATEMENT-7731")
        page.fill("#id_reason", "The customer sent the bank statement.")
        page.get_by_role("button", name="Continue").click()
        shoot(page, "mark-paid-confirm")
        page.goto(base + "/admin/")
        switch_language(page, "zh-hans")
        shoot(page, "dashboard-zh-hans")
        page.goto(base + "/admin/orders/order/?unreturned=yes")
        shoot(page, "worklist-zh-hans", full_page=False)
        merchant_portal(browser, base)
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
