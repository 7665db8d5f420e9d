"""The search page in headless Chromium against a real server: type a query, see results
with audio players, switch language, open the consistency view.

Needs Debian's `chromium` and `chromium-driver` and the `selenium` package; skipped
without them. ATRI_UPDATE_SCREENSHOT=1 saves the page to docs/screenshot.png."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from atri.training.languages import names

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 30


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("chromium and chromium-driver are not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1200,1500",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_search_page(browser, live_server, records) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, WAIT_S)
    browser.get(live_server.url + "/")
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "ready"))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#lang option")) == 9)
    # the tagline names the languages GET /languages lists (training/languages.py)
    assert browser.find_element(By.ID, "tagline").text == f"Search sounds in {names()}"

    # type a query; results come with audio players
    Select(browser.find_element(By.ID, "lang")).select_by_value("eng")
    box = browser.find_element(By.ID, "q")
    box.send_keys("a piano plays three soft notes")
    browser.find_element(By.ID, "search-btn").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) == 10)
    results = browser.find_elements(By.CSS_SELECTOR, "#results .result")
    players = browser.find_elements(By.CSS_SELECTOR, "#results .result audio")
    assert len(players) == 10
    first_id = results[0].get_attribute("data-id")
    assert players[0].get_attribute("src").endswith(f"/audio/{first_id}")
    caption = results[0].find_element(By.CSS_SELECTOR, ".caption").text
    assert caption == records[first_id].captions["eng"][0]
    # the player can load the clip (the server answers its range requests)
    ready = browser.execute_script(
        "const a = arguments[0]; a.preload = 'auto'; a.load();"
        "return new Promise(r => { a.onloadedmetadata = () => r(a.duration);"
        " a.onerror = () => r(-1); setTimeout(() => r(-2), 10000); });",
        players[0],
    )
    assert ready > 0, ready
    if os.environ.get("ATRI_UPDATE_SCREENSHOT") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        assert browser.save_screenshot(str(REPO / "docs" / "screenshot.png"))

    # switching the language re-runs the search with captions in that language
    Select(browser.find_element(By.ID, "lang")).select_by_value("jpn")
    wait.until(
        lambda d: (
            "Japanese" in d.find_element(By.ID, "search-info").text
            and d.find_elements(By.CSS_SELECTOR, "#results .result")
        )
    )
    top = browser.find_elements(By.CSS_SELECTOR, "#results .result")[0]
    shown = top.find_element(By.CSS_SELECTOR, ".caption").text
    assert shown == records[top.get_attribute("data-id")].captions["jpn"][0]

    # the consistency view of a result shows its rank in every language
    top.find_element(By.CSS_SELECTOR, ".consistency-btn").click()
    wait.until(ec.visibility_of_element_located((By.ID, "consistency-table")))
    table = browser.find_element(By.ID, "consistency-table")
    headers = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    assert headers[1:9] == ["eng", "fra", "deu", "spa", "nld", "cat", "jpn", "zho"]
    target = table.find_element(By.CSS_SELECTOR, "tr.target")
    assert target.get_attribute("data-id") == top.get_attribute("data-id")
    cells = [td.text for td in target.find_elements(By.CSS_SELECTOR, "td")][1:9]
    assert all(c.isdigit() and int(c) >= 1 for c in cells), cells


def test_an_upload_is_labelled_in_the_chosen_language(
    browser, start_server, vocabulary_index, tmp_path
) -> None:
    """An index of captionless audio built with --vocabulary default: the audio tab shows
    the labels of an uploaded recording in the language chosen."""
    import unicodedata

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from atri.training.corpus.sfx.lexicon import vocabulary

    index, sounds = vocabulary_index
    japanese = {unicodedata.normalize("NFKC", t).strip() for t in vocabulary("jpn")}
    wait = WebDriverWait(browser, WAIT_S)
    with start_server(index, log=tmp_path / "server.log") as server:
        browser.get(server.url + "/")
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "ready"))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#audio-lang option")) >= 8)
        browser.find_element(By.ID, "tab-audio").click()
        Select(browser.find_element(By.ID, "audio-lang")).select_by_value("jpn")
        browser.find_element(By.ID, "audio-file").send_keys(str(sounds[0]))
        browser.find_element(By.ID, "audio-btn").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#caption-results li"))
        items = browser.find_elements(By.CSS_SELECTOR, "#caption-results li")
        assert len(items) == 10
        for item in items:
            assert "label" in item.get_attribute("class").split()
            assert item.find_element(By.CSS_SELECTOR, ".text").text in japanese
            assert item.find_element(By.CSS_SELECTOR, ".tag").text == "label"
        assert "Japanese" in browser.find_element(By.ID, "audio-info").text
