"""The HTML edition: every page loads, every image is drawn and every internal link resolves."""

from __future__ import annotations

import functools
import http.server
import threading
import urllib.parse

import pytest

from l2s_lib import paths, site

from .conftest import free_port, local_page

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    site.build(out)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield out, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_index_lists_every_study_with_a_verdict(served):
    out, _ = served
    studies = sorted(p.stem for p in paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert sorted(p.stem for p in out.glob("[0-9][0-9]_*.html")) == studies
    index = (out / "index.html").read_text()
    for s in studies:
        assert f'href="{s}.html"' in index
    for page in map(site.study_page, sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))):
        assert len(page.verdicts) == 1 and page.tests.startswith(("Reproduces", "Tests")), page.study
    assert "Run map" in index and "<table" in index


def test_every_page_loads_with_its_images_and_links(browser, served, screenshots):
    out, base = served
    page = local_page(browser)
    failed = []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    for html in sorted(out.glob("*.html")):
        page.goto(f"{base}/{html.name}")
        page.wait_for_load_state("load")
        broken = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
                               ".map(i => i.src.slice(0, 80))")
        assert not broken, f"{html.name}: images not drawn: {broken}"
        if html.name in ("index.html", "01_merge_methods.html"):
            page.screenshot(path=str(screenshots / f"site_{html.stem}.png"), full_page=html.name == "index.html")
        links = page.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))")
        for href in links:
            target = urllib.parse.urlsplit(href)
            if target.scheme or target.netloc or not target.path:
                continue  # external links and in-page anchors
            assert (out / urllib.parse.unquote(target.path)).is_file(), f"{html.name}: broken link {href}"
    assert not failed, f"requests that failed: {failed}"
    assert not page.foreign, f"the edition asked other hosts: {page.foreign[:3]}"
    page.close()
