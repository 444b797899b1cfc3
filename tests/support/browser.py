"""Headless Debian Chromium for the console's browser tests, driven by Selenium.

Needs Debian's `chromium` and `chromium-driver`; a test fails rather than skips without them. Selenium
Manager is never used: the driver path is given.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = "install Debian's browser and driver: apt-get install chromium chromium-driver"


def chromium(user_data_dir: Path, window: tuple[int, int] = (1400, 1000)) -> WebDriver:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(f"the console's browser test needs {' and '.join(missing)}: {INSTALL_HINT}")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     f"--window-size={window[0]},{window[1]}", f"--user-data-dir={user_data_dir}"):
        options.add_argument(argument)
    # Giving the driver's path keeps Selenium Manager (which would download drivers) out of it entirely.
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def sign_in(driver: WebDriver, page: str, token: str) -> WebDriverWait[WebDriver]:
    """Open a console page (the login page, or one that sends there) and sign in with `token`; the wait
    the caller goes on with (20 s)."""
    driver.set_page_load_timeout(30)
    wait = WebDriverWait(driver, 20)
    driver.get(page)
    wait.until(lambda d: d.find_elements(By.ID, "credential"))
    driver.find_element(By.ID, "credential").send_keys(token)
    driver.find_element(By.ID, "sign-in").click()
    return wait
