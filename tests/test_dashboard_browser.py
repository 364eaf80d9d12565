"""The dashboard in a real headless Chromium (Debian's chromium + chromedriver, driven by
Selenium) against a running node (gateway, orchestrator and delegator roles, real libp2p on
127.0.0.1, real encodes): every page loads without console errors, the figures it shows match
`/v1/status`, a file submitted from the page is transcoded and its output plays (the <video>'s
currentTime advances), and the Log page shows a clean audit and filters by kind. A screenshot of
each page is saved under tests/output/dashboard/.

The page is the node's own: its API app serves the dashboard beside the job API, behind the
API's guard (the page and its files load without the token; every view needs it)."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import key

from events.crypto import LocalKeySigner, to_checksum
from node.api.dashboard import STATIC
from node.config import build_config
from node.local.demo import generate_clip
from node.protocol import DETECTIONS_FILE
from node.service import NodeService

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
OUTPUT = Path(__file__).resolve().parent / "output" / "dashboard"
TOKEN = "dashboard-test-token-0123456789"
PROFILES = "180p:300k,144p"
WAIT_S = 20.0
JOB_WAIT_S = 120.0

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)


@asynccontextmanager
async def dashboard(tmp_path: Path) -> AsyncIterator[tuple[NodeService, str]]:
    orchestrator = LocalKeySigner(key(32)).address
    raw = {
        "roles": ["gateway", "orchestrator", "delegator"],
        "data_dir": "data",
        "p2p": {"network": "dashboard-test"},
        "ledger": {"kind": "embedded"},
        "gateway": {"profiles": PROFILES},
        "orchestrator": {"ticket_ev": "1e9", "redeem_interval_s": 0.5},
        "delegator": {"orchestrator": to_checksum(orchestrator), "amount": "5e18"},
        "api": {"listen": "127.0.0.1:0", "token": TOKEN},
    }
    config = build_config(raw, tmp_path)
    keys = {"gateway": key(31), "orchestrator": key(32), "delegator": key(33)}
    async with trio.open_nursery() as nursery:
        svc: NodeService = await nursery.start(NodeService(config, keys).run)
        assert svc.api_address is not None
        yield svc, "http://{}:{}".format(*svc.api_address)
        nursery.cancel_scope.cancel()


class Browser:
    """A headless Chromium session (blocking: call its methods from a thread)."""

    def __init__(self, profile: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--autoplay-policy=no-user-gesture-required",
                     f"--user-data-dir={profile}", "--window-size=1400,1000"):  # fmt: skip
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        self.driver.set_page_load_timeout(WAIT_S)
        self.console: list[dict[str, Any]] = []

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(
            lambda _driver: predicate(), message=what
        )

    def text(self, element_id: str) -> str:
        """The element's text now (read in one script: the page re-renders as it polls)."""
        return self.driver.execute_script(
            "const e = document.getElementById(arguments[0]); return e ? e.textContent : '';",
            element_id,
        )

    def rows(self, container_id: str, tag: str = "tr") -> list[dict[str, Any]]:
        """Each row (or list item) as {"text", and its data- attributes}, read at once."""
        return self.driver.execute_script(
            "return Array.from(document.querySelectorAll('#' + arguments[0] + ' ' + arguments[1]))"
            ".map(tr => Object.assign({text: tr.textContent}, tr.dataset));",
            container_id,
            tag,
        )

    def click_tab(self, page: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.CSS_SELECTOR, f'#tabs button[data-page="{page}"]').click()

    def screenshot(self, name: str) -> Path:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        path = OUTPUT / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def collect_console(self) -> list[dict[str, Any]]:
        self.console += self.driver.get_log("browser")
        return self.console

    def close(self) -> None:
        self.driver.quit()


def _get(base: str, path: str) -> tuple[int, bytes]:
    """GET without the token: (status, body)."""
    try:
        with urllib.request.urlopen(base + path, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _status(base: str) -> Any:
    request = urllib.request.Request(base + "/v1/status",
                                     headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


async def test_dashboard_in_chromium(tmp_path: Path) -> None:
    if not (STATIC / "vendor" / "hls.min.js").exists():
        pytest.fail("the dashboard's hls.js is missing: run `make vendor`")
    clip = generate_clip(tmp_path / "clip.mp4", "320x180", 4.0)
    shutil.rmtree(OUTPUT, ignore_errors=True)
    async with dashboard(tmp_path) as (svc, base):
        browser = await trio.to_thread.run_sync(Browser, tmp_path / "chromium-profile")
        try:
            await trio.to_thread.run_sync(_drive, browser, base, clip, svc)
        finally:
            console = await trio.to_thread.run_sync(browser.collect_console)
            await trio.to_thread.run_sync(browser.close)
    errors = [entry for entry in console if entry.get("level") == "SEVERE"]
    assert not errors, errors


def _drive(browser: Browser, base: str, clip: Path, svc: NodeService) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = browser.driver
    # the page loads without the token; the data it shows does not
    assert _get(base, "/")[0] == 200 and _get(base, "/static/app.js")[0] == 200
    assert _get(base, "/v1/network")[0] == 401 and _get(base, "/metrics")[0] == 401
    driver.get(f"{base}/?token={TOKEN}")
    # the token left the address bar and lives in this tab's sessionStorage only
    browser.wait(lambda: "token" not in driver.current_url, "token removed from the URL")
    assert driver.execute_script("return sessionStorage.getItem('castnet.token')") == TOKEN

    # Network: the figures match /v1/status (polled until the page has caught up with it)
    def matches_status() -> bool:
        status = _status(base)
        shown = {role: (browser.text(f"status-events-{role}"), browser.text(f"status-peers-{role}"))
                 for role in status["roles"]}  # fmt: skip
        want = {role: (str(r["events"]), str(r["peers"])) for role, r in status["roles"].items()}
        return shown == want and browser.text("status-offers") == str(status["gateway"]["offers"])

    browser.wait(matches_status, "the status figures match /v1/status")
    browser.wait(lambda: len(browser.rows("offers")) >= 1, "the orchestrator's offer is listed")
    status = _status(base)
    assert len(browser.rows("offers")) == status["gateway"]["offers"]
    orch = status["roles"]["orchestrator"]["address"].lower()
    offer = browser.rows("offers")[0]
    assert orch[:10] in offer["text"] and "transcode:h264" in offer["text"]
    browser.screenshot("network")

    # Stake: the delegator's bond to the orchestrator, in CAST
    browser.click_tab("stake")
    browser.wait(lambda: browser.text("total-stake").endswith("CAST"), "the total stake")
    # (the orchestrator's bond to itself is listed too, once its log has observed it)
    delegator = status["roles"]["delegator"]["address"].lower()

    def bonds() -> list[dict[str, str]]:
        return [r for r in browser.rows("delegations") if delegator[:10] in r["text"].lower()]

    browser.wait(lambda: len(bonds()) == 1, "the delegator's bond")
    assert "5 CAST" in bonds()[0]["text"]
    browser.screenshot("stake")

    # Jobs: submit the clip from the page; it completes and its video plays
    browser.click_tab("jobs")
    driver.find_element(By.ID, "job-file").send_keys(str(clip))
    driver.find_element(By.ID, "job-profiles").send_keys(PROFILES)
    driver.find_element(By.ID, "job-submit").click()
    job_id = browser.wait(lambda: driver.find_element(By.ID, "submit-result")
                          .get_attribute("data-job"), "the job was accepted")  # fmt: skip
    selector = f'#jobs tr[data-job="{job_id}"][data-status="done"]'
    browser.wait(lambda: driver.find_elements(By.CSS_SELECTOR, selector), "the job is done",
                 JOB_WAIT_S)  # fmt: skip
    record = svc.runner.book.get(job_id) if svc.runner else None
    assert record is not None and record.status == "done" and record.uploaded
    browser.wait(lambda: len(browser.rows("segments")) == record.segments_total,
                 "every segment is listed")  # fmt: skip
    for tr in browser.rows("segments"):
        assert "verified" in tr["text"] and orch[:10] in tr["text"]
    start = browser.wait(
        lambda: driver.execute_script(
            "const v = document.getElementById('player'); return v.currentTime > 0.2 && "
            "v.currentTime"), "the output starts playing")  # fmt: skip
    browser.wait(lambda: driver.execute_script(
        "return document.getElementById('player').currentTime") > start + 0.5,
        "the video's currentTime advances")  # fmt: skip
    browser.screenshot("jobs")

    # an AI job from the page: face detection on the same clip, its detections listed per frame
    Select(driver.find_element(By.ID, "job-pipeline")).select_by_value("detect-faces")
    driver.find_element(By.ID, "job-profiles").clear()
    driver.find_element(By.ID, "job-submit").click()
    ai_id = browser.wait(lambda: (found := driver.find_element(By.ID, "submit-result")
                                  .get_attribute("data-job")) != job_id and found,
                         "the AI job was accepted")  # fmt: skip
    selector = f'#jobs tr[data-job="{ai_id}"][data-status="done"]'
    browser.wait(lambda: driver.find_elements(By.CSS_SELECTOR, selector), "the AI job is done",
                 JOB_WAIT_S)  # fmt: skip
    items = browser.wait(lambda: browser.rows("detections", "li"), "detections are listed")
    assert svc.runner is not None
    written = svc.runner.book.out_dir(ai_id) / DETECTIONS_FILE
    lines = written.read_text().splitlines()
    assert lines and len(items) == min(len(lines), 100)  # the page lists the first 100 frames
    first = json.loads(lines[0])
    assert items[0]["text"].startswith(f"frame {first['frame']} at ")
    assert items[0]["text"].endswith(f"{len(first['boxes'])} box(es)")
    assert not driver.find_element(By.ID, "player").is_displayed()  # the last job's video left
    browser.screenshot("jobs-ai")

    # Log: a clean audit, recent events, and a filter by kind
    browser.click_tab("log")
    browser.wait(lambda: browser.text("audit").startswith("clean"), "the audit verdict")
    browser.wait(lambda: len(browser.rows("log")) > 10, "recent events")
    kinds = {tr["kind"] for tr in browser.rows("log")}
    assert {"JobPosted", "JobVerdict"} <= kinds, kinds
    Select(driver.find_element(By.ID, "log-kind")).select_by_value("JobVerdict")
    browser.wait(lambda: {tr["kind"] for tr in browser.rows("log")}
                 == {"JobVerdict"}, "only JobVerdict events")  # fmt: skip
    browser.screenshot("log")
