"""The review app in a real browser: headless Chromium (Debian's package) driven by Selenium.

Uploads synthetic cells, opens a detail view, corrects a label with the keyboard, retrains, and checks
the new model version and the export. Screenshots go to a folder named in the output (-s shows it), for
a reviewer to look at the pages.
"""
from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if not (CHROMIUM and DRIVER) and os.environ.get("HEMOEMBED_REQUIRE_BROWSER") == "1":  # .ci/run sets it
    pytest.fail("HEMOEMBED_REQUIRE_BROWSER=1 but chromium or chromedriver is missing: the browser test must run here",
                pytrace=False)
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="needs Debian's chromium and chromium-driver (make test installs them as root)")


@pytest.fixture
def server(make_engine):
    import uvicorn

    from hemoembed.app.server import create_app

    engine = make_engine(retrain_cv=0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(engine), host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            time.sleep(0.1)
    yield url, engine
    uv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1600,1000", f"--user-data-dir={tmp_path / 'chrome'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_upload_review_correct_retrain_export_in_chromium(server, browser, reference_files):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, engine = server
    shots = Path(tempfile.mkdtemp(prefix="hemoembed_review_screens_"))
    print(f"\nscreenshots: {shots}")
    wait = WebDriverWait(browser, 120)
    browser.get(url + "/")
    wait.until(ec.text_to_be_present_in_element((By.ID, "model-badge"), "model v0"))
    files = sorted(reference_files.cells.glob("*/*.png"))[::9][:8]
    bad = Path(shots) / "not_an_image.png"
    bad.write_bytes(b"definitely not a PNG")
    engine._model_lock.acquire()  # the worker takes the batch in hand and waits for the encoder: progress shows it
    try:
        browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in [*files, bad]))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card.queued.embedding")) == 8)
        wait.until(ec.text_to_be_present_in_element((By.ID, "progress-text"), "embedding 0 of 8 now"))
        assert "0 of 8 classified" in browser.find_element(By.ID, "progress-text").text
        assert {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".card .name")} == {"embedding…"}
        browser.save_screenshot(str(shots / "0_embedding.png"))
    finally:
        engine._model_lock.release()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card")) == 8
               and not d.find_elements(By.CSS_SELECTOR, ".card.queued, .card.embedding"))
    wait.until(ec.text_to_be_present_in_element((By.ID, "progress-text"), "8 of 8 classified"))
    assert "embedding" not in browser.find_element(By.ID, "progress-text").text
    wait.until(ec.text_to_be_present_in_element((By.ID, "rejects"), "not_an_image.png"))
    assert "not an image" in browser.find_element(By.ID, "rejects").text
    assert "8 classified" in browser.find_element(By.ID, "summary-note").text
    browser.save_screenshot(str(shots / "1_gallery.png"))
    confidences = [c["confidence"] for c in engine.state.cells()]
    threshold = next((t for t in (0.9, 0.7, 0.5) if 0 < sum(c < t for c in confidences) < 8), 0.9)  # some, not all
    Select(browser.find_element(By.ID, "filter-conf")).select_by_value(str(threshold))  # "confidence below"
    shown = sum(c < threshold for c in confidences)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card")) == shown)
    assert browser.find_element(By.ID, "count").text == f"{shown} of 8 cells"
    Select(browser.find_element(By.ID, "filter-conf")).select_by_value("")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card")) == 8)

    browser.find_elements(By.CSS_SELECTOR, ".card")[0].click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#neighbours .neighbour img[src^='blob:']")) == 10)
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
    assert len(bars) == len(engine.state.classes())
    title = browser.find_element(By.ID, "detail-title").text
    cell_id = int(title.split()[1])
    browser.find_element(By.ID, "gradcam").click()
    wait.until(lambda d: "gradcam" in (d.find_element(By.ID, "detail-img").get_attribute("data-src") or "")
               and d.find_element(By.ID, "detail-img").get_attribute("src").startswith("blob:"))
    time.sleep(0.5)
    browser.save_screenshot(str(shots / "2_detail.png"))
    browser.execute_script("document.getElementById('map').scrollIntoView()")
    time.sleep(0.3)
    browser.save_screenshot(str(shots / "2_map.png"))

    predicted = engine.state.cells([cell_id])[0]["label"]
    classes = engine.state.classes()
    other = next(i for i, c in enumerate(classes) if c != predicted)
    browser.find_element(By.TAG_NAME, "body").send_keys(str(other + 1))  # keyboard correction
    wait.until(lambda d: engine.state.cells([cell_id])[0]["corrected"] == classes[other])
    wait.until(ec.text_to_be_present_in_element((By.ID, "pending"), "1 correction not in the model"))
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT)
    browser.save_screenshot(str(shots / "3_corrected.png"))

    browser.find_element(By.ID, "retrain").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "model-badge"), "model v1"))
    wait.until(ec.text_to_be_present_in_element((By.ID, "pending"), "0 corrections not in the model"))
    browser.save_screenshot(str(shots / "4_retrained.png"))
    assert all(c["version"] == 1 for c in engine.state.cells())

    batch = engine.state.batches()[-1]["id"]
    exported = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"fetch('/api/batches/{batch}/export.csv').then(r => r.text()).then(done);")
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert len(rows) == 8 and {r["model_version"] for r in rows} == {"1"}
    [corrected] = [r for r in rows if r["corrected_label"]]
    assert corrected["id"] == str(cell_id) and corrected["corrected_label"] == classes[other]
    assert float(corrected["review_seconds"]) > 0
    logs = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not logs, logs
