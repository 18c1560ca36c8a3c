"""The dashboard in a real browser (Debian's chromium, headless, driven by Playwright): a finished job
with its SEG preview, a failed job with its reason and a working retry button, deliveries per
destination. A screenshot is saved under the test's tmp folder."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dicom_node.storage.journal import JobSpec, JobState, Trigger
from tests.dicom_node.http.conftest import TOKEN, RunningNode
from tests.support.tools import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip("chromium not installed")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def failed_job(running: RunningNode) -> int:
    """A job that fails for real in the worker: its model is not in the spec."""
    spec = JobSpec(rule_name="ct-demo", models=["model-that-is-gone"], destinations=[], args={})
    [job_id] = running.journal.queue_series_jobs(
        running.dicom_job.series_uid, [spec], trigger=Trigger.MANUAL, now=time.time()
    )
    running.node.wake_workers()
    job = running.wait_job(job_id, timeout=60)
    assert job.state == JobState.FAILED
    return job.id


def test_dashboard_shows_results_failures_and_retries_in_a_browser(
    running: RunningNode, browser: Any, failed_job: int, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(str(running.client.base_url.join("/")))
    page.wait_for_selector("#status.ok", timeout=15000)  # the script polled the JSON state

    done_job = running.dicom_job.id
    card = page.locator(f'#results figure[data-job="{done_job}"]')
    if card.count() == 0:  # more recent results may have pushed it out: take the newest
        card = page.locator("#results figure.result").first
    img = card.locator("img")
    img.wait_for(timeout=15000)
    wait_for(
        lambda: page.evaluate("(el) => el.complete && el.naturalWidth", img.element_handle()), timeout=30
    )
    assert img.evaluate("(el) => el.naturalWidth") > 100

    failure = page.locator(f'#failures tr[data-failed-job="{failed_job}"]')
    assert "model-that-is-gone" in failure.inner_text()
    assert page.locator('#destinations tr[data-destination="pacs"]').count() == 1
    assert page.locator("#queue, #waiting, #associations, #events").count() == 4

    page.fill("#token", TOKEN)
    page.dispatch_event("#token", "change")
    failure.locator("button.retry").click()
    page.wait_for_selector("#action.ok", timeout=15000)
    assert f"/jobs/{failed_job}/retry: done" in page.inner_text("#action")
    retried = [j.job for j in running.journal.find_jobs(limit=50) if j.job.trigger == Trigger.MANUAL]
    assert any(j.id > failed_job for j in retried)

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert errors == []
    page.close()


def test_the_page_reads_without_javascript(running: RunningNode) -> None:
    html = running.client.get("/").text
    assert "<h2>Recent results</h2>" in html and 'src="/static/dashboard.js"' in html
    assert f"/jobs/{running.dicom_job.id}/preview.png" in html or "/preview.png" in html
    assert "https://" not in html and "http://" not in html  # nothing fetched from elsewhere
