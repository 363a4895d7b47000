import pytest

from tests.e2e.server import browser_available, demo_server, launch_browser


@pytest.fixture(scope="session")
def demo_site():
    if not browser_available():
        pytest.skip("browser tests need Debian's chromium and the playwright package")
    with demo_server() as site:
        yield site


@pytest.fixture(scope="session")
def browser(demo_site):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()
