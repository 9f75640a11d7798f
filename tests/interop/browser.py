"""Headless Chromium for the browser tests, driven by Playwright: where the binary is, why
the tests must skip when something is missing, and one launched browser per test."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

try:
    from playwright.async_api import async_playwright, expect
except ImportError:  # pragma: no cover - the test extra installs it
    async_playwright = None  # type: ignore[assignment]
    expect = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from playwright.async_api import Browser

CHROMIUM = (
    os.environ.get("GATEWAY_TEST_CHROMIUM")
    or shutil.which("chromium")
    or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
)


def skip_reason() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if async_playwright is None:
        return "needs Playwright for Python (pip install -e '.[test]')"
    if CHROMIUM is None:
        return "needs a Chromium binary (apt-get install chromium, or set GATEWAY_TEST_CHROMIUM)"
    return None


@contextlib.asynccontextmanager
async def launched() -> AsyncIterator[Browser]:
    """A headless Chromium, closed on the way out."""
    assert async_playwright is not None, skip_reason()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()
