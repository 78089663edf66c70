"""The report in headless Chromium: tables and plots render, filters work, nothing injected runs.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package. The fixture
installs the two Debian packages when it can (root with apt-get); where it cannot, the test
skips with the reason — except under CI (``CI=true``), where a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_report import hostile_run

from charter.report import build_report

PACKAGES = ["chromium", "chromium-driver"]


def _missing_browser() -> str | None:
    """Why the browser is unavailable after trying to install it, or None."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return (
            "chromium and chromedriver are not installed (apt-get install "
            + " ".join(PACKAGES)
            + ")"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]
    for command in (["apt-get", "update", "-qq"], install):
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900,
                              check=False)  # fmt: skip
        if done.returncode != 0:
            return f"{' '.join(command)} failed: {done.stderr.strip()[-300:]}"
    return (
        None
        if shutil.which("chromium") and shutil.which("chromedriver")
        else "install gave no chromium"
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _missing_browser()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        reason = reason or "selenium is not installed (pip install -e '.[test]')"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1800",
                     "--disable-dev-shm-usage"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or ""), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_report_renders_and_no_model_output_runs(
    browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from selenium.webdriver.common.by import By

    page = tmp_path / "report.html"
    page.write_text(build_report(hostile_run(tmp_path, monkeypatch), title="hostile"), "utf-8")
    browser.get(page.as_uri())
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")) >= 8
    assert len(browser.find_elements(By.CSS_SELECTOR, "#principles tbody tr")) == 3
    for plot in ("plot-frontier", "plot-principles", "plot-loss"):
        image = browser.find_element(By.ID, plot)
        assert browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 300", image
        ), plot
    # Open every example so all of the hostile text is laid out, then check again.
    browser.execute_script("document.querySelectorAll('details').forEach(d => { d.open = true; })")
    browser.find_element(By.ID, "search").send_keys("pwned")
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    shown = browser.find_element(By.CSS_SELECTOR, "#revisions .shown").text
    assert shown == "1"  # the filter ran: the one trace holds the hostile text
    browser.find_element(By.ID, "search").send_keys(" no such text anywhere")
    assert browser.find_element(By.CSS_SELECTOR, "#revisions .shown").text == "0"
    screenshot = tmp_path / "report.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
