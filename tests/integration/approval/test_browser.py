"""The approver's experience in a real browser (headless Chromium) on a laptop (1280x900) and a phone (390x844):
open the e-mailed link, sign in, see at a glance what the version does and which customers got worse, approve,
land on the result page (post-redirect-get), come back to it, read the full report.

Set MODELGATE_SCREENSHOTS=<dir> to keep a PNG of every page looked at (README's screenshots come from there).
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import pytest

from modelgate.evaluation_report import CustomerMetrics, EvaluationReport, IntervalScore

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.skipif(
        not (CHROMIUM and DRIVER),
        reason="needs Debian's chromium and chromium-driver (system-packages.txt; make setup)",
    ),
    # The tests of one deployed world run together on one pytest-xdist worker (pyproject: --dist loadgroup).
    pytest.mark.xdist_group("approval-world-a"),
]
DESKTOP, PHONE = (1280, 900), (390, 844)
# 24 customers, 7 worse than the seasonal-naive baseline (worst ratio 1.33), the mean better: the demo's shape.
RATIOS = [1.33, 1.25, 1.18, 1.12, 1.08, 1.05, 1.02] + [0.70 + 0.01 * i for i in range(17)]
INTERVAL = IntervalScore(coverage=0.784, pinball_p10=0.3, pinball_p50=0.9, pinball_p90=0.35)
EVALUATION = EvaluationReport.from_customers(
    model_package_group="energy-forecast",
    window=168,
    horizon=24,
    holdout_hours=168,
    per_customer=[
        CustomerMetrics(f"c{i + 1:04d}", 0.13 * r, 2.0, 0.13, 2.4, r, 168, interval=INTERVAL)
        for i, r in enumerate(RATIOS)
    ],
).to_json()


def tiny_png(width: int = 4, height: int = 3) -> bytes:
    """A valid PNG (the forecast plot stand-in on the report page)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80\x80\xff" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


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
        "--hide-scrollbars",
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


def viewport(browser, size: tuple[int, int]) -> None:
    """Make the page's viewport (not the window) exactly `size` CSS pixels, as a device of that size shows it."""
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": size == PHONE},
    )


def look(browser, name: str) -> dict:
    """Check the page has no horizontal overflow; keep a screenshot if asked. Returns the layout facts."""
    facts = browser.execute_script(
        "const d = document.documentElement;"
        "const wide = [...document.querySelectorAll('body *')]"
        "  .filter(e => e.getBoundingClientRect().right > d.clientWidth + 1)"
        "  .map(e => e.tagName + (e.id ? '#' + e.id : '') + ':' + e.textContent.slice(0, 40));"
        "return {scroll: d.scrollWidth, client: d.clientWidth, height: window.innerHeight, wide: wide.slice(0, 5)};"
    )
    folder = os.environ.get("MODELGATE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(folder) / f"{name}.png"))
    assert facts["scroll"] <= facts["client"], f"{name}: wider than the screen: {facts}"
    assert not facts["wide"], f"{name}: elements past the right edge: {facts['wide']}"
    return facts


def sign_in(browser, user: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    assert "Sign in" in browser.title, "the link first sends the approver to the identity provider"
    browser.find_element(By.ID, f"user-{user}").click()
    WebDriverWait(browser, 20).until(lambda b: "ModelGate" in b.title)  # back from the IdP (two redirects)


def wait_for(browser, *ids: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    found = WebDriverWait(browser, 20).until(lambda b: [e for i in ids for e in b.find_elements(By.ID, i)])
    return found[0]


def open_approve_link(world, browser, size: tuple[int, int]) -> tuple[str, str, str]:
    """A version registered by bob, its dev e-mail sent, its approve link opened at `size`:
    (size name, model package ARN, approve link)."""
    viewport(browser, size)
    arn = world.register(registered_by="bob@example.com", evaluation=EVALUATION)
    world.request("dev", world.registry_event(arn))
    (mail,) = world.emails()
    approve = mail.links()["approve"]
    browser.get(approve)
    return ("desktop" if size == DESKTOP else "phone"), arn, approve


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_an_approver_sees_the_verdict_approves_and_lands_on_the_result(world, browser, size):
    from selenium.webdriver.common.by import By

    name, arn, approve = open_approve_link(world, browser, size)
    sign_in(browser, "alice")
    assert "Approve energy-forecast version 1 for dev?" in browser.title
    facts = look(browser, f"confirmation-{name}")
    verdict = browser.find_element(By.ID, "verdict").text
    assert "7 of 24 customers got worse" in verdict
    assert "worst: c0001, 17.3 % vs 13.0 %" in verdict
    regressed = browser.find_element(By.ID, "regressed").text
    assert "c0001 17.3 % 13.0 % 1.33" in regressed
    assert "c0006" not in regressed, "the page lists the five worst; the report has the rest"
    metrics = browser.find_element(By.ID, "metrics").text
    assert "MAPE 11.5 %\nbaseline 13.0 %" in metrics
    assert "must be at most 1.00 (100% of baseline): passed" in metrics
    assert "kWh" in metrics
    assert "80 % interval (P10-P90) covered 78.4 % of held-out hours" in metrics
    page = browser.find_element(By.TAG_NAME, "body").text
    assert "No version is approved for dev yet." in page
    assert "the test approvers are asked to promote it" in page
    assert "PendingManualApproval" not in page
    assert "waiting for a decision" in page
    assert "bob@example.com" in browser.find_element(By.ID, "model").text
    button = browser.find_element(By.ID, "confirm").rect
    if size == DESKTOP:
        assert button["y"] + button["height"] <= facts["height"], f"Approve button below the fold: {button}"
    else:
        assert button["y"] + button["height"] <= 2 * facts["height"], f"Approve button too far down: {button}"
    assert world.describe(arn)["ModelApprovalStatus"] == "PendingManualApproval", "looking changed nothing"

    browser.find_element(By.ID, "confirm").click()
    result = wait_for(browser, "result", "refused")
    assert result.get_attribute("id") == "result", browser.page_source
    assert "Your approval was recorded at" in result.text
    assert "alice@example.com" in result.text
    assert "/modelgate/energy-forecast/dev" in result.text
    look(browser, f"result-{name}")
    assert world.describe(arn)["ModelApprovalStatus"] == "Approved"

    browser.back()  # the confirmation page's URL: now its result, never a live button
    wait_for(browser, "result", "refused")
    assert browser.find_elements(By.ID, "result")
    assert not browser.find_elements(By.ID, "confirm")
    browser.get(approve)  # and once more from the e-mail
    assert "Your approval was recorded at" in wait_for(browser, "result", "refused").text
    assert len(world.history("dev")) == 1


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_the_report_page_lists_every_customer_worst_first_with_the_plot(world, browser, size):
    from selenium.webdriver.common.by import By

    name = "desktop" if size == DESKTOP else "phone"
    viewport(browser, size)
    arn = world.register(evaluation=EVALUATION)
    world.session.client("s3").put_object(
        Bucket=world.bucket, Key="models/energy-forecast/v1/forecasts.png", Body=tiny_png()
    )
    world.request("dev", world.registry_event(arn))
    (mail,) = world.emails()
    assert "&view=report" in mail.text, "the e-mail links the readable report, not an s3:// URI"

    browser.get(mail.links()["approve"])
    sign_in(browser, "alice")
    browser.find_element(By.LINK_TEXT, "Full report").click()
    table = wait_for(browser, "customers")
    rows = table.find_elements(By.TAG_NAME, "tr")[1:]
    assert len(rows) == 24
    assert rows[0].text.startswith("c0001")
    assert rows[0].text.endswith("1.33")
    assert browser.find_element(By.ID, "plot").get_attribute("naturalWidth") == "4", "the plot is shown"
    look(browser, f"report-{name}")
    browser.find_element(By.LINK_TEXT, "Back to the decision").click()
    wait_for(browser, "confirm")


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_someone_who_cannot_decide_can_sign_in_as_someone_else(world, browser, size):
    from selenium.webdriver.common.by import By

    name, _, _ = open_approve_link(world, browser, size)
    sign_in(browser, "carol")  # not in the approvers group
    refused = wait_for(browser, "refused")
    assert "carol@example.com is not a member of the 'modelgate-approvers' group" in refused.text
    assert browser.find_elements(By.TAG_NAME, "h1")[0].text == "You are not an approver"
    assert refused.text.count("not an approver") == 0, "the heading is not repeated in the message"
    assert "Sign in as someone who is" in browser.find_element(By.ID, "next").text
    assert "modelgate-approvers" in browser.find_element(By.TAG_NAME, "footer").text, "who can decide here"
    look(browser, f"refusal-{name}")

    browser.find_element(By.ID, "switch").click()
    sign_in(browser, "alice")
    wait_for(browser, "confirm")
    assert "Signed in as alice@example.com" in browser.find_element(By.ID, "signed-in").text
