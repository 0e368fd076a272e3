"""Browser tests: Debian's Chromium driven by Playwright (no browser download), servers on 127.0.0.1 only.

Skipped with a reason when Chromium or Playwright is missing, unless ``L2S_REQUIRE_BROWSER=1`` (set by
``make test``/CI, whose set-up installs Chromium), where a missing browser is a failure. Screenshots go to
``tests/output/browser/`` (ignored by git).
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from l2s_lib import paths

SCREENSHOTS = paths.ROOT / "tests" / "output" / "browser"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    return os.environ.get("L2S_CHROMIUM") or next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def browser():
    exe = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        exe = None
    if exe is None:
        msg = "no Chromium/Playwright: apt-get install chromium; pip install -e '.[test]'"
        if os.environ.get("L2S_REQUIRE_BROWSER") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def local_page(browser, **kwargs):
    """A page that may talk to 127.0.0.1 only: any other request is aborted and recorded in ``page.foreign``."""
    page = browser.new_page(**kwargs)
    page.foreign = []

    def route(r):
        host = r.request.url.split("/")[2] if "://" in r.request.url else ""
        if r.request.url.startswith(("data:", "blob:", "about:")) or host.split(":")[0] in ("127.0.0.1", "localhost"):
            r.continue_()
        else:
            page.foreign.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return page


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
