"""The approver's experience in a real browser (headless Chromium): open the e-mailed link, sign in, see the
model, click approve, see the result."""

from __future__ import annotations

import shutil
import tempfile

import pytest

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver (system-packages.txt; make setup)"
)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="modelgate-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_an_approver_opens_the_link_signs_in_sees_the_model_and_approves(world, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    arn = world.register(registered_by="bob@example.com")
    world.request("dev", world.registry_event(arn))
    (mail,) = world.emails()

    browser.get(mail.links()["approve"])
    assert "Sign in" in browser.title, "the link first sends the approver to the identity provider"
    browser.find_element(By.ID, "user-alice").click()

    WebDriverWait(browser, 20).until(lambda b: "ModelGate" in b.title)  # back from the IdP (two redirects)
    assert "Approve energy-forecast version 1 for dev?" in browser.title
    details = browser.find_element(By.ID, "model").text
    assert "energy-forecast" in details
    assert "bob@example.com" in details
    assert "mape" in browser.find_element(By.ID, "metrics").text
    assert world.describe(arn)["ModelApprovalStatus"] == "PendingManualApproval", "looking changed nothing"

    browser.find_element(By.ID, "confirm").click()
    result = WebDriverWait(browser, 20).until(
        lambda b: b.find_elements(By.ID, "result") or b.find_elements(By.ID, "refused")
    )
    assert result[0].get_attribute("id") == "result", browser.page_source
    result = result[0].text
    assert "Approved" in result
    assert "alice@example.com" in result
    assert "/modelgate/energy-forecast/dev" in result
    assert world.describe(arn)["ModelApprovalStatus"] == "Approved"

    browser.get(mail.links()["approve"])  # and once more from the e-mail: the link is spent
    refused = WebDriverWait(browser, 20).until(lambda b: b.find_elements(By.ID, "refused"))
    assert "used by alice@example.com" in refused[0].text
