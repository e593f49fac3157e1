"""The leaderboard page in a real browser: headless Chromium opens it from disk, sorts and filters a table,
measures the plots' marks, reads the console and takes a screenshot.

Chromium and its driver come from the distribution (``apt-get install chromium chromium-driver``, which
``.ci/run`` does before the tests; without them these tests skip); Selenium drives them through
/usr/bin/chromedriver, so Selenium Manager never downloads anything. Set ``VLPT_SITE_SCREENSHOT=PATH`` to keep the screenshot (the one in
docs/leaderboard-site.png is made so).
"""
from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from checkout import LEADERBOARD
from vlpt.results.publish import write_leaderboard

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="session")
def chromium():
    """Paths of Debian's chromium and chromedriver (``.ci/run`` installs them); the tests skip without them."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(f"{CHROMIUM} and {CHROMEDRIVER} are missing: apt-get install chromium chromium-driver")
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture(scope="module")
def browser(chromium, tmp_path_factory):
    """A headless Chromium driven by Selenium, offline (no sync, updates or background requests)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in vlpt's `test` extra")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium[0])
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
                     "--window-size=1400,1000", "--hide-scrollbars"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(chromium[1])), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory):
    """The site generated from the committed starter records, open in the browser."""
    folder = tmp_path_factory.mktemp("board")
    shutil.copytree(LEADERBOARD / "records", folder / "records")
    paths = write_leaderboard(folder / "records", folder, html=True)
    assert paths[-1] == folder / "index.html"
    browser.get((folder / "index.html").as_uri())  # the first page this browser opens: its log is the page's
    return browser


def column_keys(driver, table_id, header):
    """The visible rows' sort keys in the column headed ``header`` of the first tbody, top to bottom."""
    return driver.execute_script(
        """
        const table = document.getElementById(arguments[0]);
        const index = Array.from(table.tHead.rows[0].cells).findIndex(c => c.textContent.trim() === arguments[1]);
        return Array.from(table.tBodies[0].rows).filter(r => !r.hidden).map(r => r.cells[index].dataset.sort);
        """, table_id, header)


def header(driver, table_id, text):
    from selenium.webdriver.common.by import By

    (cell,) = [th for th in driver.find_elements(By.CSS_SELECTOR, f"#{table_id} thead th") if th.text == text]
    return cell


def test_clicking_a_header_sorts_the_rows(page):
    table, column = "table-few_shot", "Accuracy (mean ± std)"
    before = [float(k) for k in column_keys(page, table, column)]
    assert before != sorted(before) and len(before) == 25  # leaderboard order is not accuracy order
    header(page, table, column).click()
    assert [float(k) for k in column_keys(page, table, column)] == sorted(before)
    assert header(page, table, column).get_attribute("aria-sort") == "ascending"
    header(page, table, column).click()
    assert [float(k) for k in column_keys(page, table, column)] == sorted(before, reverse=True)
    assert header(page, table, column).get_attribute("aria-sort") == "descending"
    header(page, table, "Method").click()  # text columns sort as text
    methods = column_keys(page, table, "Method")
    assert methods == sorted(methods) and methods[0] == "apt · m8" and methods[-1] == "zeroshot"


def test_filters_keep_only_matching_rows(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    section = page.find_element(By.ID, "few_shot")
    search = section.find_element(By.CSS_SELECTOR, "input.filter-text")
    search.send_keys("coop gram")
    visible = [r for r in section.find_elements(By.CSS_SELECTOR, "tbody tr") if r.is_displayed()]
    assert [r.get_attribute("data-method") for r in visible] == ["coop"]
    assert "gram-init" in visible[0].text
    assert section.find_element(By.CSS_SELECTOR, ".count").text == "1 of 25 rows"
    search.clear()
    search.send_keys(" ")  # clear() fires no input event; a blank query shows every row again
    assert len([r for r in section.find_elements(By.CSS_SELECTOR, "tbody tr") if r.is_displayed()]) == 25

    Select(section.find_element(By.CSS_SELECTOR, "select.filter[name=shots]")).select_by_value("0")
    visible = [r for r in section.find_elements(By.CSS_SELECTOR, "tbody tr") if r.is_displayed()]
    assert [(r.get_attribute("data-method"), r.get_attribute("data-shots")) for r in visible] == [("zeroshot", "0")]
    Select(section.find_element(By.CSS_SELECTOR, "select.filter[name=shots]")).select_by_value("")


def test_every_plot_rendered_its_marks(page):
    charts = page.execute_script(
        """
        return Array.from(document.querySelectorAll("svg.chart")).map(svg => {
          const box = svg.getBoundingClientRect();
          const marks = Array.from(svg.querySelectorAll(".mark")).map(m => {
            const b = m.getBBox();
            return {tag: m.tagName, width: b.width, height: b.height};
          });
          return {title: svg.querySelector("title").textContent, width: box.width, height: box.height, marks: marks};
        });
        """)
    kind = {c["title"]: c["title"].split(" (")[0].split(",")[0] for c in charts}
    assert list(kind.values()) == [
        "Accuracy vs shots", "Base vs novel accuracy", "Test-time adaptation: gain over zeroshot",
        "Online test-time adaptation: gain over zeroshot", "Dice per segmentation set"
    ]
    for chart in charts:
        assert chart["width"] > 300 and chart["height"] > 200, chart["title"]
        assert chart["marks"], chart["title"]
        for mark in chart["marks"]:
            if mark["tag"] in ("circle", "rect"):
                assert mark["width"] > 0 and mark["height"] > 0, (chart["title"], mark)
            else:  # lines and paths: at least one extent (a level line is flat)
                assert mark["width"] > 0 or mark["height"] > 0, (chart["title"], mark)
    counts = {kind[c["title"]]: len(c["marks"]) for c in charts}
    assert counts["Dice per segmentation set"] == 8  # one bar per segmentation method
    assert counts["Test-time adaptation: gain over zeroshot"] == 10  # 5 methods x 2 domains
    assert counts["Online test-time adaptation: gain over zeroshot"] == 6  # TDA, DMN-ZS and DMN-TF x 2 domains


def test_no_console_errors_and_a_screenshot(page, tmp_path):
    problems = [entry for entry in page.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]  # since load
    assert problems == []
    height = page.execute_script("return document.documentElement.scrollHeight")
    page.set_window_size(1400, min(height, 2200))  # the top of the page: the plots and the first table
    page.execute_script("""
        document.querySelectorAll("input.filter-text").forEach(box => {
          box.value = ""; box.dispatchEvent(new Event("input"));
        });
        window.scrollTo(0, 0);""")
    shot = tmp_path / "leaderboard-site.png"
    assert page.save_screenshot(str(shot))
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert width >= 1000 and height >= 1000 and len(data) > 100_000  # a rendered page, not a blank one
    from PIL import Image

    with Image.open(shot) as image:
        colours = image.convert("RGB").resize((350, 375)).getcolors(maxcolors=1_000_000)
    assert len(colours) > 500  # text, plots and tables, not one flat colour
    keep = os.environ.get("VLPT_SITE_SCREENSHOT")
    if keep:
        Path(keep).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, keep)
