"""Headless Debian chromium for the browser tests (imported as ``pages``): the binary, its flags, a launcher, and a
page that records console errors, page errors, dialogs and requests."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def launch():
    """A Playwright chromium browser on :data:`CHROMIUM`; fails the test (never skips) when it is missing."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} not found: run `make setup` as root (installs Debian's chromium) or set CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


class RecordingPage:
    """A fresh browser context and page that records console errors, page errors, dialogs and requests."""

    def __init__(self, browser, width: int = 1280, height: int = 900):
        self.ctx = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
        self.page = self.ctx.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}")
                     if m.type in ("error", "assert") else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url} {r.failure}"))

    def check_clean(self) -> None:
        """No error, no dialog (nothing injected ran), no request other than ``file://``."""
        assert self.errors == [], self.errors
        assert self.dialogs == [], f"script injected through the page ran: {self.dialogs}"
        remote = [u for u in self.requests if not u.startswith("file://")]
        assert remote == [], f"network requests: {remote}"

    def hover_chart(self, chart_id: str, fractions=(0.28, 0.3)) -> str:
        """Move the mouse over a plotly chart at these fractions of its width (plotly answers mouse moves over its
        drag layer) and return the hover label's text."""
        drag = self.page.locator(f"#{chart_id} .nsewdrag").first
        drag.scroll_into_view_if_needed()
        box = drag.bounding_box()
        for frac in fractions:
            drag.hover(position={"x": box["width"] * frac, "y": box["height"] / 2})
        self.page.wait_for_selector(f"#{chart_id} .hoverlayer .hovertext, #{chart_id} .hoverlayer .legend",
                                    timeout=5_000)
        return self.page.locator(f"#{chart_id} .hoverlayer").text_content()

    def shot(self, path: Path) -> Path:
        """Full-page screenshot to ``path`` (and to ``$FER_SCREENSHOT_DIR`` when set)."""
        self.page.screenshot(path=str(path), full_page=True)
        if os.environ.get("FER_SCREENSHOT_DIR"):
            d = Path(os.environ["FER_SCREENSHOT_DIR"])
            d.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, d / path.name)
        return path

    def close(self) -> None:
        self.ctx.close()
