"""The threshold explorer in a real browser: JupyterLab on a free localhost port (with a token), headless Chromium
from the system's packages driven by playwright (no browser download), notebook 03 opened and run, a slider
dragged, Save clicked, the saved threshold read back from the checkpoint, and a screenshot written
(into $AIMONK_SCREENSHOT_DIR, else the test's temporary folder).

Run it with `pytest tests/browser` (docs/testing.md); it skips, saying why, where Chromium or playwright is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from helpers import ROOT, train_cached, train_config

from aimonk.checkpoint import load_checkpoint
from aimonk.io import MODEL_FILE

pytestmark = pytest.mark.slow
CHROMIUM = Path(os.environ.get("AIMONK_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium"))
if not CHROMIUM.is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; or set AIMONK_CHROMIUM)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright missing: pip install -e '.[browser]'")
pytest.importorskip("jupyterlab", reason="jupyterlab missing: pip install -e '.[dev]'")
pytest.importorskip("ipywidgets", reason="ipywidgets missing: pip install -e '.[dev]'")

NOTEBOOK = "notebooks/03_thresholds_inference.ipynb"
QUICK = {"bootstrap = 1000": "bootstrap = 200", "examples = 6": "examples = 2"}  # a shorter run of the notebook


@pytest.fixture
def lab_root(tmp_path: Path) -> Path:
    """A copy of the repository's shape with notebook 03 (fewer resamples), the demo data, and a small model trained
    on it in models/: what notebook 02 leaves, smaller."""
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", root)
    shutil.copy(ROOT / "labels.txt", root)
    for name in ("aimonk", "images"):
        (root / name).symlink_to(ROOT / name)
    notebook = nbformat.read(ROOT / NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        for old, new in QUICK.items():
            cell.source = cell.source.replace(old, new)
    nbformat.write(notebook, root / NOTEBOOK)
    train_cached(train_config(root, tmp_path / "cache", out_dir=str(root / "models"), epochs=10, val_fraction=0.2))
    return root


@pytest.fixture
def lab(lab_root: Path, tmp_path: Path) -> Iterator[str]:
    """JupyterLab serving `lab_root`; its URL with the token."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = os.urandom(16).hex()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AIMONK_NOTEBOOK_OUT_DIR": str(lab_root / "models"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path)}
    log = (tmp_path / "jupyterlab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", "--ServerApp.allow_root=True", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={lab_root}"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "jupyterlab.log").read_text()
                time.sleep(0.5)
        yield f"{url}/lab/tree/{NOTEBOOK}?token={token}"
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def test_a_slider_moved_and_saved_in_jupyterlab_is_the_checkpoints_threshold(lab: str, lab_root: Path, tmp_path):
    screenshots = Path(os.environ.get("AIMONK_SCREENSHOT_DIR", tmp_path))
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(lab)
            page.get_by_text(re.compile(r"\| Idle$")).wait_for(timeout=120_000)  # the kernel is up (status bar)
            _run_all_cells(page)
            handle = page.locator(".widget-slider .noUi-handle").first
            handle.wait_for(timeout=600_000)  # the notebook runs up to the explorer
            news = page.get_by_role("button", name="No", exact=True)
            if news.count():  # JupyterLab's question about news, in the way
                news.click()
            readout = page.locator(".widget-slider .widget-readout").first
            before = float(readout.inner_text())
            handle.scroll_into_view_if_needed()
            box = handle.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.mouse.move(box["x"] - 60, box["y"] + box["height"] / 2, steps=12)
            page.mouse.up()
            page.wait_for_function("(before) => parseFloat(document.querySelector('.widget-slider .widget-readout')"
                                   ".textContent) !== before", arg=before, timeout=30_000)
            moved = float(readout.inner_text())
            page.get_by_role("button", name="Save thresholds").click()
            page.get_by_text("saved thresholds").wait_for(timeout=60_000)
            page.get_by_text("Precision, recall and F1 at each slider").evaluate(
                "element => element.scrollIntoView({block: 'start'})")
            screenshots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshots / "explorer_in_jupyterlab.png"))
        finally:
            browser.close()
    saved = load_checkpoint(lab_root / "models" / MODEL_FILE)["thresholds"][0]
    assert moved < before and saved == pytest.approx(moved, abs=5e-4), (before, moved, saved)


def _run_all_cells(page: sync_api.Page) -> None:
    """Run > Run All Cells, again if no cell started within a minute (a click while the kernel connects is lost)."""
    for _ in range(3):
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Run All Cells$")).click()
        try:
            page.locator(".jp-InputPrompt", has_text="[*]").first.wait_for(timeout=60_000)  # a cell queued
            return
        except sync_api.TimeoutError:
            continue
    raise AssertionError("Run All Cells started no cell in JupyterLab")
