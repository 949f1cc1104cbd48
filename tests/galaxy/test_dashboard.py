"""The live dashboard in real headless Chromium (Debian `chromium`, driven by Playwright).

Starts a run with `--ui` and two real device processes, opens `/ui#token=...` (the fragment
never leaves the browser), watches tasks turn completed in the page, SIGKILLs a device and
watches it turn `lost`, watches a failed task's reason appear under "Failed tasks" beside the
colour legend, and saves a screenshot. Skips with a clear
reason when chromium or playwright is missing locally; CI installs chromium in .ci/run.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _need_browser():  # type: ignore[no-untyped-def]
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian chromium (apt-get install -y chromium); .ci/run installs it in CI")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("needs the playwright Python package (pip install playwright; no browser download)")
    return sync_playwright


def test_the_page_holds_no_data_and_the_socket_needs_a_token(galaxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Through the CLI's own orchestrator: the page is static (no data, no cookie, whatever the
    URL carries); the data socket refuses a wrong token in the handshake header."""
    plan = tmp_path / "p.yaml"
    plan.write_text(yaml.safe_dump({"tasks": [{"id": "x", "executor": {"kind": "sleep", "args": {"seconds": 60}}}]}))
    galaxy.start_orchestrator(str(plan), "--run-id", "tok", "--ui")
    base = f"http://127.0.0.1:{galaxy.port}/ui"
    with urllib.request.urlopen(f"{base}?token={galaxy.token}", timeout=10 * galaxy.tscale) as page:
        body = page.read()
        assert page.status == 200 and b"Galaxy dashboard" in body and page.headers.get("Set-Cookie") is None
        assert galaxy.token.encode() not in body and b"data-run" not in body
    req = urllib.request.Request(f"{base}/ws", headers={"Authorization": "Bearer wrong", "Connection": "Upgrade",
                                                        "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                                                        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10 * galaxy.tscale)
    assert info.value.code == 401
    info.value.close()  # an open HTTP connection would hold the server's shutdown


def test_dashboard_in_headless_chromium(galaxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sync_playwright = _need_browser()
    tasks = [{"id": "start", "executor": {"kind": "echo", "args": {"value": 1}}}]
    tasks += [{"id": f"fan{i}", "after": ["start"], "executor": {"kind": "sleep", "args": {"seconds": 0.3}}}
              for i in range(4)]
    tasks += [{"id": "broken", "after": ["start"], "max_retries": 0,
               "executor": {"kind": "sleep", "args": {"seconds": 0.1, "fail": "disk full on the scanner"}}},
              {"id": "join", "after": [f"fan{i}" for i in range(4)], "executor": {"kind": "echo"}},
              {"id": "wait", "after": ["join"], "device": "keeper",
               "executor": {"kind": "sleep", "args": {"seconds": 600}}}]
    plan = tmp_path / "p.yaml"
    plan.write_text(yaml.safe_dump({"name": "dashboard-demo", "tasks": tasks}))
    galaxy.start_orchestrator(str(plan), "--run-id", "ui", "--ui", device_timeout=1.5)
    galaxy.device("worker", ["cpu"])
    victim = galaxy.device("keeper", ["cpu"])
    t = 30_000 * galaxy.tscale
    shot = Path(os.environ.get("GALAXY_DASHBOARD_SCREENSHOT", tmp_path / "dashboard.png"))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 700}, bypass_csp=True)  # its probes use eval
            page.goto(f"http://127.0.0.1:{galaxy.port}/ui#token={galaxy.token}", timeout=t)
            page.wait_for_function(
                "document.querySelectorAll('g.task[data-status=completed]').length >= 6", timeout=t)
            page.wait_for_selector("#dev-keeper[data-status=busy]", timeout=t)
            victim.kill()  # SIGKILL the device running `wait`
            page.wait_for_selector("#dev-keeper[data-status=lost]", timeout=t)
            assert page.locator("#dev-worker").get_attribute("data-status") in ("online", "busy")
            assert "lost" in page.inner_text("#events")
            assert page.evaluate("location.hash") == ""  # the token left the address bar
            page.wait_for_selector("#failed-broken", timeout=t)
            assert "disk full on the scanner" in page.inner_text("#failures")
            assert "failed" in page.inner_text("#legend") and "completed" in page.inner_text("#legend")
            page.screenshot(path=str(shot), full_page=True)
            # The page's own script under its Content-Security-Policy (no bypass this time).
            strict = browser.new_page()
            strict.goto(f"http://127.0.0.1:{galaxy.port}/ui#token={galaxy.token}", timeout=t)
            strict.wait_for_selector("#dev-worker", timeout=t)
            strict.wait_for_selector("#failed-broken", timeout=t)
            assert strict.inner_text("#conn") == "live"
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
