"""Test helpers for the HTML report: a real Chromium driven by Playwright, and what a page did.

Debian's `chromium` (installed by .ci/parts/chromium.sh) is launched through `executable_path`:
Playwright cannot download its own browsers on these machines.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright


def artifacts_dir() -> Path:
    """Where tests leave screenshots for CI to keep: $DETECTION_TEST_ARTIFACTS, else
    results/test-artifacts/ in the checkout."""
    folder = Path(
        os.environ.get("DETECTION_TEST_ARTIFACTS")
        or Path(__file__).resolve().parent.parent / "results" / "test-artifacts"
    )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless system Chromium; fails (no skip) when it is not installed."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        raise RuntimeError(
            "no chromium on PATH: run .ci/parts/chromium.sh (apt-get install chromium)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class OpenedPage:
    """A report page and everything it asked for or complained about."""

    page: Page
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def count(self, testid: str) -> int:
        """The number a `data-testid` element shows."""
        return int(self.page.get_by_test_id(testid).text_content())

    def renders(self) -> int:
        """How many times the gallery was rendered (the page's own counter)."""
        return int(self.page.get_attribute("body", "data-render"))

    def after_render(self, action) -> None:
        """Run ``action`` and wait until the page has rendered again (no sleeps)."""
        before = self.renders()
        action()
        self.page.wait_for_function(f"Number(document.body.getAttribute('data-render')) > {before}")

    def set_threshold(self, name: str, value: float) -> float:
        """Move the slider ``threshold-<name>`` to ``value``; returns the value the page uses."""
        slider = self.page.get_by_test_id(f"threshold-{name}")
        self.after_render(
            lambda: slider.evaluate(
                "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }",
                str(value),
            )
        )
        return float(slider.input_value())

    def select(self, testid: str, value: str) -> None:
        """Choose ``value`` in a filter <select> and wait for the gallery."""
        self.after_render(lambda: self.page.get_by_test_id(testid).select_option(value))

    def shown_images(self) -> list[str]:
        """`data-image` of every gallery part on every page (walks the pager)."""
        images = []
        while True:
            images += [
                p.get_attribute("data-image") for p in self.page.get_by_test_id("part").all()
            ]
            button = self.page.get_by_test_id("page-next")
            if button.is_disabled():
                break
            self.after_render(button.click)
        while not self.page.get_by_test_id("page-prev").is_disabled():
            self.after_render(self.page.get_by_test_id("page-prev").click)
        return images


@contextmanager
def open_report(browser: Browser, index: Path, **context_args) -> Iterator[OpenedPage]:
    """Open a report's index.html from disk and wait for its ready marker."""
    context = browser.new_context(accept_downloads=True, **context_args)
    page = context.new_page()
    opened = OpenedPage(page)
    page.on("request", lambda request: opened.requests.append(request.url))
    page.on(
        "console",
        lambda msg: opened.console_errors.append(msg.text) if msg.type == "error" else None,
    )
    page.on("pageerror", lambda err: opened.console_errors.append(str(err)))
    try:
        page.goto(index.resolve().as_uri())
        page.wait_for_selector("body[data-ready='1']")
        yield opened
    finally:
        context.close()
