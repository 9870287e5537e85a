"""The web page of ``stn-gluon serve``, in a real headless Chromium driven by Selenium.

The real server (its default, the shipped MNIST model) on a free loopback port;
real MNIST digits drawn on the page's canvas as mouse strokes; uploads through
the file input; a phone-sized window, touch and the keyboard. Chromium and
chromedriver come from the system (Debian: ``apt-get install chromium
chromium-driver``; ``.ci/run`` installs them); Selenium Manager is never asked
to download anything. ``STN_GLUON_SCREENSHOT=docs/images/web-page.png`` saves
the screenshot the README shows (always saved under the test's tmp_path).
"""
import io
import os
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from test_serving import Server

CHROMIUM = os.environ.get("STN_GLUON_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("STN_GLUON_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
DIGITS = 20
PEN = 12  # canvas pixels: the pad is 280 px for 28 input pixels, strokes overlap a little
MAX_BODY = 300_000


@pytest.fixture(scope="module")
def server():
    started = Server(None, "--max-body-bytes", str(MAX_BODY))
    yield started
    code, out, err = started.stop()
    assert code == 0, err
    assert out.startswith("no --model given: using pretrained:stn_lenet (")  # the default, said in one line


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.isfile(path)]
    if missing:
        pytest.fail(f"the browser test needs Chromium and chromedriver ({', '.join(missing)} not found): "
                    f"apt-get install -y chromium chromium-driver", pytrace=False)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never download a driver or a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-extensions", "--window-size=1000,800",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(20)
    browser.set_script_timeout(20)
    yield browser
    browser.quit()


def open_page(driver, server):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"http://127.0.0.1:{server.port}/")
    WebDriverWait(driver, 10).until(lambda d: d.find_element("id", "model").text.startswith("Model: "))
    driver.execute_script(f"const p = document.getElementById('pen'); p.value = {PEN};")


def state(driver):
    return driver.execute_script(
        "const r = document.getElementById('result'), e = document.getElementById('error');"
        "const img = document.getElementById('rectified');"
        "return {status: r.dataset.status, seq: Number(r.dataset.seq), label: document.getElementById('label').textContent,"
        " error: e.hidden ? null : e.textContent, outline: Number(document.getElementById('overlay').dataset.outline),"
        " rectified: img.hidden ? 0 : img.naturalWidth};")


def answer_after(driver, seq, timeout=15):
    """The page's state once it has rendered an answer newer than ``seq`` for everything drawn."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        now = state(driver)
        if now["seq"] > seq and now["status"] in ("ok", "error"):
            return now
        time.sleep(0.02)
    raise AssertionError(f"no answer within {timeout} s: {state(driver)}")


def strokes(image, threshold=128):
    """The dark... light pixels of a 28x28 digit as straight runs ``(r0, c0, r1, c1)``, along rows or
    columns, whichever needs fewer strokes."""
    def runs(mask):
        out = []
        for r, row in enumerate(mask):
            c = 0
            while c < len(row):
                if row[c]:
                    e = c
                    while e + 1 < len(row) and row[e + 1]:
                        e += 1
                    out.append((r, c, r, e))
                    c = e + 1
                else:
                    c += 1
        return out

    mask = np.asarray(image) >= threshold
    by_row, by_col = runs(mask), [(c0, r, c1, r) for r, c0, _, c1 in runs(mask.T)]
    return by_row if len(by_row) <= len(by_col) else by_col


def draw(driver, image, pointer="mouse"):
    """Trace ``image`` (28x28, light on dark) on the pad as real pointer strokes."""
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    pad = driver.find_element("id", "pad")
    size = pad.size["width"]
    scale = size / 28
    kind = interaction.POINTER_TOUCH if pointer == "touch" else interaction.POINTER_MOUSE
    actions = ActionBuilder(driver, mouse=PointerInput(kind, pointer), duration=0)
    at = lambda v: int(round((v + 0.5) * scale - size / 2))  # noqa: E731  pixel centre, from the pad's centre
    for r0, c0, r1, c1 in strokes(image):
        actions.pointer_action.move_to(pad, at(c0), at(r0)).pointer_down()
        actions.pointer_action.move_to(pad, at(c1), at(r1)).pointer_up()
    actions.perform()


def clear(driver):
    driver.find_element("id", "clear").click()
    assert state(driver)["status"] == "idle"
    return state(driver)["seq"]


def outline_pixels(driver):
    """How many pixels of the input view have the outline's colour."""
    return driver.execute_script(
        "const c = document.getElementById('overlay'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 0; i < d.length; i += 4)"
        " if (Math.abs(d[i] - 41) < 30 && Math.abs(d[i + 1] - 182) < 30 && Math.abs(d[i + 2] - 246) < 30) n++;"
        "return n;")


def save_screenshot(driver, tmp_path):
    driver.save_screenshot(str(tmp_path / "page.png"))
    wanted = os.environ.get("STN_GLUON_SCREENSHOT")
    if wanted:
        driver.save_screenshot(wanted)


@pytest.mark.slow
def test_drawn_real_digits_are_read_right_with_the_rectified_image_and_outline(driver, server, sample, tmp_path):
    open_page(driver, server)
    assert driver.find_element("id", "model").text.startswith("Model: pretrained:stn_lenet (affine")
    wrong = []
    for k in range(DIGITS):
        seq = clear(driver)
        draw(driver, sample.test_images[k])
        got = answer_after(driver, seq)
        assert got["status"] == "ok" and got["error"] is None, got
        if got["label"] != str(sample.test_labels[k]):
            wrong.append((k, int(sample.test_labels[k]), got["label"]))
        assert got["rectified"] == 28 and got["outline"] == 4 * 27 + 1, got
    assert not wrong, f"digits read wrong (index, true, shown): {wrong}"
    assert outline_pixels(driver) > 200
    bars = driver.find_elements("css selector", "#bars .bar-row")
    assert len(bars) == 10 and bars[int(sample.test_labels[DIGITS - 1])].get_attribute("class") == "bar-row top"
    save_screenshot(driver, tmp_path)


def png(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_uploads_and_server_errors_show_in_the_page_which_keeps_working(driver, server, sample, tmp_path):
    open_page(driver, server)
    upload = driver.find_element("id", "file")
    k = int(np.flatnonzero(sample.test_labels == 3)[0])
    photo = tmp_path / "three.png"  # dark on light and larger, as a scan would be
    photo.write_bytes(png(np.asarray(Image.fromarray(255 - sample.test_images[k]).resize((140, 140)))))
    seq = state(driver)["seq"]
    upload.send_keys(str(photo))
    got = answer_after(driver, seq)
    assert got["label"] == "3" and got["rectified"] == 28 and got["outline"] > 0, got
    assert "inverted" in driver.find_element("id", "confidence").text

    text = tmp_path / "notes.png"
    text.write_bytes(b"these are not pixels\n" * 10)
    upload.send_keys(str(text))
    got = answer_after(driver, got["seq"])
    assert got["status"] == "error" and got["error"].startswith("notes.png: not a readable image"), got
    assert got["label"] == "\u2013" and got["rectified"] == 0

    huge = tmp_path / "huge.png"
    huge.write_bytes(png(np.random.RandomState(0).randint(0, 256, (700, 700), dtype=np.uint8)))
    assert huge.stat().st_size > MAX_BODY
    upload.send_keys(str(huge))
    got = answer_after(driver, got["seq"])
    assert got["status"] == "error" and f"{MAX_BODY} bytes allowed" in got["error"], got

    seq = clear(driver)
    assert state(driver)["error"] is None
    k = int(np.flatnonzero(sample.test_labels == 6)[0])
    draw(driver, sample.test_images[k])
    got = answer_after(driver, seq)
    assert got["status"] == "ok" and got["label"] == "6" and got["error"] is None, got


def test_phone_sized_window_touch_and_keyboard(driver, server, sample):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver.set_window_size(390, 844)
    try:
        open_page(driver, server)
        # the controls in tab order from the top of the page, each with a name
        order = []
        for _ in range(4):
            ActionChains(driver).send_keys(Keys.TAB).perform()
            order.append(driver.execute_script(
                "const e = document.activeElement; return [e.id, e.getAttribute('aria-label') || "
                "(e.labels && e.labels[0] ? e.labels[0].textContent : e.textContent)];"))
        assert [i for i, _ in order] == ["pad", "clear", "file", "pen"], order
        assert all(name.strip() for _, name in order), order

        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        pad = driver.find_element("id", "pad").rect
        assert pad["x"] >= 0 and pad["x"] + pad["width"] <= 390 and pad["width"] >= 250
        seq = clear(driver)
        k = int(np.flatnonzero(sample.test_labels == 0)[0])
        draw(driver, sample.test_images[k], pointer="touch")
        got = answer_after(driver, seq)
        assert got["label"] == "0", got

        # keyboard drawing: a vertical stroke is a 1; Escape clears
        seq = clear(driver)
        driver.find_element("id", "pad").click()  # focus (a click also inks a dot at the centre)
        keys = ActionChains(driver)
        keys.send_keys(Keys.ARROW_UP * 8, " ").send_keys(Keys.ARROW_DOWN * 16, " ")
        keys.perform()
        got = answer_after(driver, seq)
        assert got["label"] == "1", got
        ActionChains(driver).send_keys(Keys.ESCAPE).perform()
        assert state(driver)["label"] == "\u2013" and state(driver)["status"] == "idle"
    finally:
        driver.set_window_size(1000, 800)


@pytest.mark.slow
def test_with_a_token_the_page_asks_for_it_once_and_keeps_working(driver, sample):
    """``serve --token``: the page's first call is refused (401), it asks for the token once, then every
    call carries it."""
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    token = "page-token-1234"
    guarded = Server(None, "--token", token)
    try:
        driver.get(f"http://127.0.0.1:{guarded.port}/")
        alert = WebDriverWait(driver, 10).until(expected_conditions.alert_is_present())
        assert "token" in alert.text
        alert.send_keys(token)
        alert.accept()
        WebDriverWait(driver, 10).until(lambda d: d.find_element("id", "model").text.startswith("Model: "))
        driver.execute_script(f"const p = document.getElementById('pen'); p.value = {PEN};")
        for digit in (7, 2):
            seq = clear(driver)
            draw(driver, sample.test_images[int(np.flatnonzero(sample.test_labels == digit)[0])])
            got = answer_after(driver, seq)
            assert got["status"] == "ok" and got["label"] == str(digit), got
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text  # asked once only
    finally:
        guarded.stop()
