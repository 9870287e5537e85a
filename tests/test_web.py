"""The web page of ``stn-gluon serve``, in a real headless Chromium driven by Selenium.

The real server (its default, the shipped MNIST model) on a free loopback port;
real MNIST digits drawn on the page's canvas as mouse strokes; uploads through
the file input; a phone-sized window, touch and the keyboard. A colour model that is not a digit model
(tests/test_colour_inputs.py builds it) gets the page for photos: upload and drop, class names, the region
sampled drawn on the photo; no page logs an error in the browser's console (the favicon included). Chromium and
chromedriver come from the system (Debian: ``apt-get install chromium
chromium-driver``; ``.ci/run`` installs them); Selenium Manager is never asked
to download anything. ``STN_GLUON_SCREENSHOT=docs/images/web-page.png`` saves
the screenshot the README shows (always saved under the test's tmp_path).
"""
import base64
import io
import json
import os
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from test_colour_inputs import COLOURS, make_colour_model, solid
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
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, read by console_errors()
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


# ---- a model that is not a digit model: the page for photos ------------------------------------------------

@pytest.fixture(scope="module")
def colour_server(tmp_path_factory):
    started = Server(make_colour_model(tmp_path_factory.mktemp("colour")) / "model.onnx")
    yield started
    code, _, err = started.stop()
    assert code == 0, err


def console_errors(driver):
    """The browser console's errors since the last call (a resource that failed to load is one)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def photo_state(driver):
    return driver.execute_script(
        "const p = document.getElementById('photo'), r = document.getElementById('rectified');"
        "return {outline: Number(p.dataset.outline), region: p.dataset.region, confidence:"
        " document.getElementById('confidence').textContent, rectified: r.hidden ? 0 : r.naturalWidth,"
        " pad: !document.getElementById('draw-panel').hidden, photos: !document.getElementById('photo-panel').hidden,"
        " title: document.getElementById('title').textContent,"
        " bars: [...document.querySelectorAll('#bars .cls')].map((e) => e.textContent)};")


def drop_file(driver, data, name):
    """Drop ``data`` as the file ``name`` on the photo square, as a drag from the desktop does."""
    driver.execute_script(
        "const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));"
        "const dt = new DataTransfer(); dt.items.add(new File([bytes], arguments[1], {type: 'image/png'}));"
        "const target = document.getElementById('photo-drop');"
        "for (const type of ['dragenter', 'dragover', 'drop'])"
        " target.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: dt}));",
        base64.b64encode(data).decode("ascii"), name)


def test_a_colour_model_gets_upload_and_drop_with_class_names_and_the_region_on_the_photo(driver, colour_server,
                                                                                          tmp_path):
    console_errors(driver)  # what earlier tests left (their refused requests) is not this page's
    driver.get(f"http://127.0.0.1:{colour_server.port}/")
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(lambda d: d.find_element("id", "model").text.startswith("Model: "))
    now = photo_state(driver)
    assert now["photos"] and not now["pad"] and now["title"] == "Spatial transformer: classify an image", now
    assert "32\u00d732\u00d73" in driver.find_element("id", "model").text
    sign = tmp_path / "sign.png"  # 96 x 64: the model reads it as 32 x 32, zoomed 2x on the centre
    Image.fromarray(solid(COLOURS["stop"], (64, 96))).save(sign)
    seq = state(driver)["seq"]
    driver.find_element("id", "photo-file").send_keys(str(sign))
    got = answer_after(driver, seq)
    assert got["status"] == "ok" and got["label"] == "stop" and got["rectified"] == 32, got
    photo = photo_state(driver)
    assert photo["confidence"].startswith("(class 0, ") and photo["outline"] == 4 * 31 + 1, photo
    # the central half of the input, in the photo's pixels: x from 8.25 to 23.75 input pixels times 96 / 32
    np.testing.assert_allclose(json.loads(photo["region"]), [24.8, 16.5, 71.3, 47.5], atol=0.1)
    assert photo["bars"] == list(COLOURS)
    seq = got["seq"]
    drop_file(driver, png(solid(COLOURS["water"], (50, 50))), "water.png")
    got = answer_after(driver, seq)
    assert got["status"] == "ok" and got["label"] == "water", got
    with_outline = driver.execute_script(
        "const c = document.getElementById('photo'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 0; i < d.length; i += 4)"
        " if (Math.abs(d[i] - 41) < 30 && Math.abs(d[i + 1] - 182) < 30 && Math.abs(d[i + 2] - 246) < 30) n++;"
        "return n;")
    assert with_outline > 200  # drawn on the photo, in the outline's colour
    assert console_errors(driver) == []  # no 404 for /favicon.ico, nothing else either
