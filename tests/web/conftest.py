"""The web app in a real headless Chromium (Debian's `chromium`, driven by Playwright for
Python; Playwright's own browser downloads are never used) against the whole running system
on a seeded database of this module's own. Screenshots go to tests/web/screenshots/
(git-ignored) so a person can look at what the tests saw."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from flowviz.tools import seed
from tests import tools
from tests.conftest import TEMPLATE, Servers, System, add_users, running_system

CHROMIUM = os.environ.get("FLOWVIZ_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(__file__).parent / "screenshots"
PASSWORDS = {
    "ana": "viewer-pass-2026",
    "omar": "operator-pass-2026",
    "quinn": "qc-pass-2026",
    "ada": "admin-pass-2026",
}
_numbers = itertools.count()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture starts (the database is session-wide): no browser, no browser test."""
    if "browser" in getattr(item, "fixturenames", ()) and tools.find(CHROMIUM) is None:
        tools.missing(f"{CHROMIUM} not found: install Debian's browser with `apt-get install -y chromium`")


@pytest.fixture(scope="module")
def web_system(servers: Servers) -> Iterator[System]:
    """The whole system on a seeded database of this module (its holds and runs stay here)."""
    name = f"web{os.getpid()}_{next(_numbers)}"
    with servers.admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    url = servers.url(name)
    seed.load(url)
    add_users(url)
    with running_system(servers, url, suffix="-web") as system:
        yield system
    with servers.admin() as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which(CHROMIUM), args=ARGS)
        yield b
        b.close()


class App:
    """A fresh tab (own sessionStorage) on the app, with the page's errors collected."""

    def __init__(self, page: Page, base: str) -> None:
        self.page = page
        self.base = base
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        # A 4xx answer the page handles (a search miss, a refused form) is logged by the browser
        # as a failed resource; anything else logged as an error is a fault.
        page.on(
            "console",
            lambda m: (
                m.type == "error"
                and not m.text.startswith("Failed to load resource")
                and self.errors.append(m.text)
            ),
        )
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def open(self, path: str = "/", user: str | None = "ada") -> Page:
        self.page.goto(self.base + path)
        if user:
            self.sign_in(user)
        return self.page

    def sign_in(self, user: str) -> None:
        form = self.page.locator("#sign-in-form")
        form.locator("input[name=username]").fill(user)
        form.locator("input[name=password]").fill(PASSWORDS[user])
        form.locator("button[type=submit]").click()
        self.page.locator("#sign-in").wait_for(state="hidden")

    def drawn(self, root: str | None = None) -> list[str]:
        """Waits for the graph (of `root`) to be drawn and interactive; the lot codes it shows."""
        selector = "#graph[data-drawn]" if root is None else f'#graph[data-root="{root}"]'
        self.page.wait_for_selector(selector, state="attached")
        ids: list[str] = self.page.evaluate("() => flowviz.graph.cy.nodes().map((n) => n.id())")
        return ids

    def node_classes(self, code: str) -> list[str]:
        classes: list[str] = self.page.evaluate("(c) => flowviz.graph.cy.getElementById(c).classes()", code)
        return classes

    def shot(self, name: str) -> None:
        SHOTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def app(browser: Browser, web_system: System) -> Iterator[App]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    a = App(page, web_system.base)
    yield a
    context.close()
    assert not a.errors, f"errors in the page: {a.errors}"
    assert not a.dialogs, f"the page opened dialogs: {a.dialogs}"
