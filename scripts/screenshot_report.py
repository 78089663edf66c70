"""Screenshot a Charter report in headless Chromium (Debian's chromium + chromedriver).

    python scripts/screenshot_report.py runs/demo/report.html docs/report.png [--height 2400]

Used for the picture in the README; the browser test does the same in tests.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                     f"--window-size={args.width},{args.height}"):  # fmt: skip
        options.add_argument(argument)
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.get(args.report.resolve().as_uri())
        driver.save_screenshot(str(args.png))
    finally:
        driver.quit()
    print(args.png)


if __name__ == "__main__":
    main()
