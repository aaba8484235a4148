"""The reader study page driven in headless Chromium: readers answer, download, and the answers are scored.

Needs Debian's chromium and chromium-driver and the selenium package; skipped
without them, but failed under CI (CI=true), which installs them.
Set READER_STUDY_SCREENSHOT=/path.png to keep a screenshot of a real-CT pair.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import ndimage, stats

from cgan_ct import read_volume, write_nifti
from cgan_ct.demo.phantom import make_phantom
from cgan_ct.study.reader_study import build_study
from tests.conftest import REPO

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - depends on the machine
    webdriver = None

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
BROWSER_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")
NAME = re.compile(r"^[0-9a-f]{16}\.png$")


def _missing(what: str) -> None:
    message = f"{what} (Debian: apt-get install chromium chromium-driver; pip install selenium)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests, but {message}")
    pytest.skip(message)


@pytest.fixture
def browser(tmp_path, monkeypatch):
    """Headless Chromium through Debian's chromedriver (no driver download); downloads go to .downloads."""
    if webdriver is None:
        _missing("the selenium package is not installed")
    if not (CHROMIUM and CHROMEDRIVER):
        _missing("chromium or chromedriver is not installed")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (*BROWSER_ARGS, "--window-size=1280,1000", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A phantom as 'real', a blurred copy as 'generated': 5 slice pairs in both windows, 10 trials."""
    folder = tmp_path_factory.mktemp("reader_study")
    real = make_phantom(4, 20, 128)
    blurred = ndimage.gaussian_filter(real.hu.astype(np.float32), (0, 1.5, 1.5))
    write_nifti(real, folder / "real.nii.gz")
    write_nifti(real.replace(hu=np.rint(blurred).astype(np.int16)), folder / "generated.nii.gz")
    made = build_study(folder / "real.nii.gz", folder / "generated.nii.gz", folder / "out", 5, "both", 21, 256)
    key = json.loads(made.key.read_text())
    return made.page, made.key, {t["left_image"]: t for t in key["trials"]}


def _wait(driver, condition, timeout=20):
    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def _shown(driver) -> tuple[str, str]:
    """The two image names on screen, once both have loaded."""
    _wait(driver, lambda d: d.execute_script("return [...document.images].every(i => i.complete && i.naturalWidth)"))
    return tuple(
        driver.find_element(By.ID, f"img-{side}").get_attribute("src").rsplit("/", 1)[1] for side in ("left", "right")
    )


def _requested(driver) -> list[str]:
    """URLs the page asked for so far, from Chromium's DevTools network log."""
    events = (json.loads(entry["message"])["message"] for entry in driver.get_log("performance"))
    return [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]


def _start(driver, page: pathlib.Path, reader: str) -> None:
    driver.get(page.as_uri())
    driver.find_element(By.ID, "reader").send_keys(reader)
    driver.find_element(By.ID, "begin").click()
    _wait(driver, lambda d: d.find_element(By.ID, "trial").is_displayed())


def _answer(driver, trial: dict, side: str, use_keys: bool, confidence: int, note: str) -> None:
    if use_keys:
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT if side == "left" else Keys.ARROW_RIGHT)
    else:
        driver.find_element(By.ID, f"pick-{side}").click()
    assert "chosen" in driver.find_element(By.ID, f"pick-{side}").get_attribute("class")
    driver.find_element(By.CSS_SELECTOR, f"input[name=confidence][value='{confidence}']").click()
    box = driver.find_element(By.ID, "note")
    box.clear()
    box.send_keys(note)


def _progress(driver) -> str:
    return driver.find_element(By.ID, "progress").text


def _read_all(driver, by_left: dict, decide, start_at: int = 1) -> dict:
    """Answers every remaining pair as ``decide(key row)`` says; returns {trial: (side, confidence, note)}."""
    total = len(by_left)
    given = {}
    for n in range(start_at, total + 1):
        _wait(driver, lambda d, n=n: _progress(d) == f"Pair {n} of {total}")
        left, right = _shown(driver)
        trial = by_left[left]
        assert trial["right_image"] == right and trial["trial"] == n
        side = decide(trial)
        given[n] = (side, 1 + n % 5, f'pair {n}: edges, "grain" é')
        _answer(driver, trial, side, use_keys=n % 2 == 0, confidence=given[n][1], note=given[n][2])
        driver.find_element(By.ID, "next").click()
    return given


def _download(driver, button: str, name: str) -> pathlib.Path:
    driver.find_element(By.ID, button).click()
    path = driver.downloads / name
    _wait(driver, lambda d: path.exists() and not list(d.downloads.glob("*.crdownload")))
    time.sleep(0.2)
    return path


def _score(key: pathlib.Path, *answers: pathlib.Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.reader_study_score", "--key", str(key), "--answers", *map(str, answers)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines()[2:]:
        reader, window, pairs, correct, accuracy, ci, p = (c.strip() for c in line.strip("|").split("|"))
        low, high = (float(v.rstrip("%")) for v in ci.split(" to "))
        rows[reader, window] = (int(pairs), int(correct), float(accuracy.rstrip("%")), low, high, float(p))
    return rows


def _expected(outcomes: list[bool]) -> tuple:
    n, k = len(outcomes), sum(outcomes)
    test = stats.binomtest(k, n, 0.5)
    ci = test.proportion_ci(0.95, method="exact")
    return n, k, 100 * k / n, 100 * ci.low, 100 * ci.high, test.pvalue


@pytest.mark.slow
def test_readers_answer_every_pair_download_and_are_scored(browser, study):
    page, key_path, by_left = study
    flip = {"left": "right", "right": "left"}
    # R1 picks the real image except in trials 3, 6 and 9; R2 is right in the lung window only.
    _start(browser, page, "R1")
    first = _read_all(browser, by_left, lambda t: t["real_side"] if t["trial"] % 3 else flip[t["real_side"]])
    _wait(browser, lambda d: d.find_element(By.ID, "done").is_displayed())
    assert "You answered 10 of 10 pairs" in browser.find_element(By.ID, "summary").text
    # Review: go back to the last pair, where the choice is still shown, and change it.
    browser.find_element(By.ID, "review").click()
    for _ in range(9):
        _wait(browser, lambda d: d.find_element(By.ID, "next").is_enabled())
        browser.find_element(By.ID, "next").click()
    _wait(browser, lambda d: _progress(d) == "Pair 10 of 10")
    last = by_left[_shown(browser)[0]]
    assert "chosen" in browser.find_element(By.ID, f"pick-{first[10][0]}").get_attribute("class")
    first[10] = (flip[first[10][0]], *first[10][1:])
    browser.find_element(By.ID, f"pick-{first[10][0]}").click()
    browser.find_element(By.ID, "next").click()
    json_answers = _download(browser, "download-json", "answers-R1.json")

    # R2 stops after three pairs, reloads the page and resumes where it left off.
    _start(browser, page, "R2")
    lung_only = {
        t["trial"]: t["real_side"] if t["window"] == "lung" else flip[t["real_side"]] for t in by_left.values()
    }
    for n in range(1, 4):
        _wait(browser, lambda d, n=n: _progress(d) == f"Pair {n} of 10")
        browser.find_element(By.ID, f"pick-{lung_only[n]}").click()
        browser.find_element(By.ID, "next").click()
    _wait(browser, lambda d: _progress(d) == "Pair 4 of 10")
    _start(browser, page, "R2")
    assert _progress(browser) == "Pair 4 of 10"
    _read_all(browser, by_left, lambda t: lung_only[t["trial"]], start_at=4)
    csv_answers = _download(browser, "download-csv", "answers-R2.csv")

    saved = json.loads(json_answers.read_text())
    assert saved["reader"] == "R1" and [a["trial"] for a in saved["answers"]] == list(range(1, 11))
    assert [(a["choice"], a["confidence"], a["note"]) for a in saved["answers"]] == [first[n] for n in range(1, 11)]
    assert all(a["seconds"] >= 0 for a in saved["answers"]) and last["trial"] == 10
    assert 'pair 4: edges, ""grain"" é' in csv_answers.read_text(encoding="utf-8")

    rows = _score(key_path, json_answers, csv_answers)
    outcomes = {
        "R1": [(by_t["window"], first[n][0] == by_t["real_side"]) for n, by_t in _by_trial(by_left).items()],
        "R2": [(t["window"], lung_only[n] == t["real_side"]) for n, t in _by_trial(by_left).items()],
    }
    outcomes["pooled"] = outcomes["R1"] + outcomes["R2"]
    assert len(rows) == 9
    for (reader, window), figures in rows.items():
        picked = [ok for w, ok in outcomes[reader] if window in ("all", w)]
        n, k, accuracy, low, high, p = _expected(picked)
        assert figures[:2] == (n, k)
        assert figures[2:5] == pytest.approx((accuracy, low, high), abs=0.051)
        assert figures[5] == pytest.approx(p, rel=5e-3)
    assert rows["R2", "lung"][:2] == (5, 5) and rows["R2", "mediastinum"][:2] == (5, 0)
    assert rows["R1", "all"][:2] == (10, 6)  # 7 right, less trial 10 changed from right to wrong (10 % 3 != 0)


def _by_trial(by_left: dict) -> dict:
    return {t["trial"]: t for t in sorted(by_left.values(), key=lambda t: t["trial"])}


@pytest.mark.slow
def test_page_in_the_browser_does_not_reveal_the_key(browser, study):
    page, key_path, by_left = study
    key_text = key_path.read_text()
    assert not list(page.parent.rglob("key*")) and key_path.parent == page.parent.parent
    _start(browser, page, "R9")
    data = browser.execute_script("return study")
    assert all(set(t) == {"trial", "window", "left", "right"} for t in data["trials"])
    snapshots = set()
    for n in range(1, len(by_left) + 1):
        _wait(browser, lambda d, n=n: _progress(d) == f"Pair {n} of {len(by_left)}")
        left, right = _shown(browser)
        assert NAME.match(left) and NAME.match(right)
        html = browser.execute_script("return document.querySelector('main').outerHTML")
        assert "real_side" not in html and '"real"' not in html and "generated_slice" not in html
        # Before the reader chooses, the page differs between pairs only in image names, counter and window label.
        html = html.replace(left, "LEFT").replace(right, "RIGHT")
        html = html.replace(f"Pair {n} of", "Pair N of").replace(">Finish<", ">Next<").replace(' disabled=""', "")
        html = re.sub(r"(Lung|Mediastinal) window \(W -?\d+, L -?\d+\)", "WINDOW", html)
        snapshots.add(html)
        browser.find_element(By.ID, "pick-left").click()
        browser.find_element(By.ID, "next").click()
    assert len(snapshots) == 1
    requests = _requested(browser)
    assert all(url.startswith("file://") for url in requests), requests  # nothing from a network
    images = {n for t in by_left.values() for n in (t["left_image"], t["right_image"])}
    assert {url.rsplit("/", 1)[1] for url in requests} == {page.name} | images
    for t in by_left.values():  # image names carry nothing of the key beyond being listed there
        assert t["left_image"] in key_text and "left" not in t["left_image"] and "real" not in t["right_image"]


@pytest.mark.slow
def test_real_ct_pair_renders_for_a_radiologist(browser, shared_ct, tmp_path):
    """Real chest CT against a smoothed copy: full 512 x 512 slices, square, side by side, nothing labelled."""
    series = shared_ct / "lung-pet-ct-dx-A0001"
    if not series.is_dir():
        pytest.skip(f"{series} not found")
    real = read_volume(series)
    smoothed = ndimage.gaussian_filter(real.hu.astype(np.float32), (0, 1.2, 1.2))
    write_nifti(real.replace(hu=np.rint(smoothed).astype(np.int16)), tmp_path / "generated.nii.gz")
    made = build_study(series, tmp_path / "generated.nii.gz", tmp_path / "out", pairs=1, window="both", seed=5)
    _start(browser, made.page, "R1")
    keep = os.environ.get("READER_STUDY_SCREENSHOT")
    for n in (1, 2):
        _wait(browser, lambda d, n=n: _progress(d) == f"Pair {n} of 2")
        _shown(browser)
        boxes = browser.execute_script(
            "return [...document.images].map(i => [i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width,"
            " i.getBoundingClientRect().height, i.getBoundingClientRect().top, i.getBoundingClientRect().right])"
        )
        (nw, nh, w, h, top, right), (nw2, nh2, w2, h2, top2, right2) = boxes
        assert (nw, nh, nw2, nh2) == (512, 512, 512, 512)
        assert w == h == w2 == h2 == 512 and top == top2 and right < right2 <= 1280
        visible = browser.find_element(By.ID, "trial").text
        assert not re.search(r"real|generated|synthetic|fake|A0001|\.dcm|\.nii", visible, re.I)
        shot = tmp_path / f"pair{n}.png"
        assert browser.save_screenshot(str(shot))
        if keep:
            target = pathlib.Path(keep)
            shutil.copy(shot, target if n == 1 else target.with_name(f"{target.stem}_{n}{target.suffix}"))
        browser.find_element(By.ID, "pick-right").click()
        browser.find_element(By.ID, "next").click()
