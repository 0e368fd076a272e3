"""A reader's JupyterLab: open a study notebook, Run All, see its figure, tables and verdict; the file is unchanged."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from l2s_lib import paths
from l2s_lib.studies import registry

from .conftest import free_port, local_page

pytestmark = [pytest.mark.slow, pytest.mark.browser]

#: The quickest study (no generation); its figure, tables and verdict are what every notebook shows.
STUDY = "06_task_vectors"
NOTEBOOK = f"notebooks/{STUDY}.ipynb"


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on a free 127.0.0.1 port over the repository, autosave off, the app exposed for commands."""
    port, token = free_port(), secrets.token_hex(16)
    # The tests write under their own output root (tests/conftest.py), which the server's kernels inherit: give
    # the notebook its declared input there (notebook 06 reads notebook 01's committed results).
    for study in registry.module(STUDY).INPUTS:
        shutil.copytree(paths.ROOT / "data" / "results" / study, paths.results_dir() / study, dirs_exist_ok=True)
    settings = tmp_path / "settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    # Autosave off: the test asserts that opening and running leave the file as committed.
    (settings / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    news = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))  # no outside host
    env = os.environ | {"JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={paths.ROOT}",
           "--LabApp.expose_app_in_browser=True", "--ServerApp.open_browser=False",
           "--ServerApp.allow_root=True"]  # CI and containers run as root
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=paths.ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("jupyter lab exited:\n" + (tmp_path / "lab.log").read_text())
                time.sleep(0.5)
        else:
            raise RuntimeError("jupyter lab did not start in 60 s:\n" + (tmp_path / "lab.log").read_text())
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_run_all_shows_figure_tables_and_verdict_and_leaves_the_file_unchanged(browser, lab, screenshots):
    base, token = lab
    nb_file, twin = paths.ROOT / NOTEBOOK, (paths.ROOT / NOTEBOOK).with_suffix(".py")
    before = nb_file.read_bytes(), twin.read_bytes()
    page = local_page(browser, viewport={"width": 1400, "height": 1000})
    page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget"
                           " && window.jupyterapp.shell.currentWidget.sessionContext"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
                           timeout=90_000)
    time.sleep(2)  # let JupyterLab reconcile the kernelspec and metadata, as it does on open
    dirty = page.evaluate("window.jupyterapp.shell.currentWidget.context.model.dirty")
    page.screenshot(path=str(screenshots / "lab_opened.png"))
    assert not dirty, "opening the notebook marked it modified (kernelspec or metadata differ from the committed file)"

    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    # Done when every code cell has an execution count and the kernel is idle again.
    try:
        page.wait_for_function(
            """() => {
                const nb = window.jupyterapp.shell.currentWidget;
                const cells = nb.content.model.cells;
                let all = true;
                for (let i = 0; i < cells.length; i++) {
                    const c = cells.get(i);
                    if (c.type === 'code' && !c.executionCount) all = false;
                }
                return all && nb.sessionContext.session.kernel.status === 'idle';
            }""", timeout=300_000, polling=1000)
    except Exception:
        # Say which cells did not run (and what the last one printed) instead of a bare time-out.
        page.screenshot(path=str(screenshots / "lab_run_all_timeout.png"), full_page=True)
        state = page.evaluate("""() => {
            const nb = window.jupyterapp.shell.currentWidget; const cells = nb.content.model.cells; const out = [];
            for (let i = 0; i < cells.length; i++) { const c = cells.get(i);
                if (c.type === 'code') out.push([i, c.executionCount, c.outputs.length ?
                    (c.outputs.get(c.outputs.length - 1).toJSON().evalue || JSON.stringify(c.outputs.get(c.outputs.length - 1).toJSON()).slice(0, 300)) : '']); }
            return [nb.sessionContext.session.kernel.status, out]; }""")
        raise AssertionError(f"run-all did not finish: kernel {state[0]}, cells {state[1]}")
    page.screenshot(path=str(screenshots / "lab_run_all.png"), full_page=True)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")
    assert errors.count() == 0, errors.first.inner_text()
    images = page.locator(".jp-RenderedImage img")
    assert images.count() >= 1, "no figure rendered"
    assert page.evaluate("Array.from(document.querySelectorAll('.jp-RenderedImage img'))"
                         ".every(i => i.complete && i.naturalWidth > 100)")
    assert page.locator(".jp-RenderedHTMLCommon table").count() >= 1, "no rendered table"
    # The verdict is a markdown *output* (generated from the numbers), not a markdown cell.
    assert page.locator(".jp-OutputArea-output.jp-RenderedMarkdown").count() >= 1, "no generated verdict rendered"
    images.first.scroll_into_view_if_needed()
    page.screenshot(path=str(screenshots / "lab_figure.png"))
    page.close()
    assert (nb_file.read_bytes(), twin.read_bytes()) == before, "the notebook or its twin changed on disk"
