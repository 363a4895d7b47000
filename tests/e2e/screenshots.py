"""`make screenshots`: the staff pages of a fresh demo, in English and Chinese, written to
docs/screenshots/ (the README shows them)."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.e2e.server import ROOT, browser_available, demo_server, launch_browser, log_in

OUT = ROOT / "docs" / "screenshots"


def shoot(page, name: str, *, full_page: bool = True) -> None:
    path = OUT / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    print(path.relative_to(ROOT))


def switch_language(page, code: str) -> None:
    page.locator(f".language-switch button[value='{code}']").click()
    page.wait_for_load_state()


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
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
