"""The Sliders accordion and cards in a real webui UI, driven by headless Chromium (opt-in).

Needs ``SD_WEBUI_UI_URL`` (the webui started without ``--nowebui``, e.g. ``http://127.0.0.1:7860``), Debian's
``chromium`` and ``chromium-driver`` and ``pip install -r requirements-integration.txt``. With
``SD_WEBUI_SCREENSHOTS=docs/images`` the tests also save the README's pictures there (accordion, strip, Train tab).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid

import pytest

pytestmark = pytest.mark.integration

UI_URL = os.environ.get("SD_WEBUI_UI_URL", "").rstrip("/")
PREFIX = "#script_txt2img_concept_sliders_"

if not UI_URL or not shutil.which("chromedriver"):
    pytest.skip("set SD_WEBUI_UI_URL and install chromium + chromium-driver", allow_module_level=True)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402


@pytest.fixture(scope="module")
def page():
    options = Options()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,2400"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.get(UI_URL)
    wait_for(lambda: driver.find_elements(By.ID, "txt2img_prompt"), 180)
    time.sleep(2)
    yield driver
    driver.quit()


def wait_for(condition, timeout: float):
    start = time.time()
    while time.time() - start < timeout:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError("timed out")


def js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def set_value(driver, selector: str, value) -> None:
    js(driver, "const e = gradioApp().querySelector(arguments[0]); e.value = arguments[1]; updateInput(e);",
       selector, value)


def value_of(driver, selector: str):
    return js(driver, "const e = gradioApp().querySelector(arguments[0]); return e.type === 'checkbox' ? "
                      "e.checked : e.value;", selector)


def screenshot(driver, selector: str, file_name: str) -> None:
    """Save a picture of one element when ``SD_WEBUI_SCREENSHOTS`` names a folder (the README's pictures)."""
    folder = os.environ.get("SD_WEBUI_SCREENSHOTS")
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    element = js(driver, "const e = gradioApp().querySelector(arguments[0]); e.scrollIntoView(); return e;", selector)
    time.sleep(1)
    element.screenshot(os.path.join(folder, file_name))


def choose(driver, dropdown: str, option: str) -> None:
    field = driver.find_element(By.CSS_SELECTOR, f"{dropdown} input")
    field.click()
    # The dropdown lists only the options matching its text: clear it to see them all.
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.BACKSPACE)
    options = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, f"{dropdown} ul.options li"), 10)
    next(o for o in options if o.text.strip() == option).click()
    wait_for(lambda: value_of(driver, f"{dropdown} input") == option, 10)


def test_accordion_rows_drive_the_generation(page):
    set_value(page, "#txt2img_width input[type=number]", 64)
    set_value(page, "#txt2img_height input[type=number]", 64)
    set_value(page, "#txt2img_steps input[type=number]", 3)
    set_value(page, "#txt2img_prompt textarea", "a photo of a cat")
    if not value_of(page, f"{PREFIX}enable-checkbox input"):
        page.find_element(By.CSS_SELECTOR, f"{PREFIX}enable .label-wrap").click()
    assert value_of(page, f"{PREFIX}enable-checkbox input") is True
    choose(page, f"{PREFIX}name_0", "it_age")
    # Picking a slider sets the α slider's range from the file (it_age recommends -4..4).
    wait_for(lambda: js(page, f"return gradioApp().querySelector('{PREFIX}alpha_0 input[type=number]').max") == "4",
             20)
    set_value(page, f"{PREFIX}alpha_0 input[type=number]", 2)
    time.sleep(1)
    page.find_element(By.ID, "txt2img_generate").click()
    info = wait_for(lambda: "Steps" in (text := js(page, "return gradioApp().querySelector('#html_info_txt2img')"
                                                          ".innerText")) and text, 600)
    assert 'Sliders: "it_age:2"' in info and "Slider hashes:" in info


def test_strip_row_spreads_alpha_over_the_batch(page):
    """Five images, α −3 … 3 from the strip row, each with the first row's slider at the same α."""
    set_value(page, "#txt2img_width input[type=number]", 128)
    set_value(page, "#txt2img_height input[type=number]", 128)
    set_value(page, "#txt2img_batch_size input[type=number]", 5)
    choose(page, f"{PREFIX}name_0", "it_text")
    set_value(page, f"{PREFIX}alpha_0 input[type=number]", 1)
    choose(page, f"{PREFIX}strip_name", "it_age")
    set_value(page, f"{PREFIX}strip_from input[type=number]", -3)
    set_value(page, f"{PREFIX}strip_to input[type=number]", 3)
    time.sleep(1)
    screenshot(page, f"{PREFIX}enable", "accordion.png")
    info_text = "return gradioApp().querySelector('#html_info_txt2img').innerText"
    before = js(page, info_text)
    page.find_element(By.ID, "txt2img_generate").click()
    info = wait_for(lambda: "Steps" in (text := js(page, info_text)) and text != before and text, 600)
    try:
        # The first image's infotext holds its own α; the gallery shows the grid and the five images.
        assert 'Sliders: "it_text:1, it_age:-3"' in info, info
        # (gradio draws each thumbnail twice, in the preview strip and in the grid: count the images)
        images = js(page, "return new Set([...gradioApp().querySelectorAll('#txt2img_gallery .thumbnail-item img')]"
                          ".map(i => i.src)).size")
        assert images == 6, images
        screenshot(page, "#txt2img_gallery", "strip.png")
    finally:
        set_value(page, "#txt2img_batch_size input[type=number]", 1)
        set_value(page, "#txt2img_width input[type=number]", 64)
        set_value(page, "#txt2img_height input[type=number]", 64)
        choose(page, f"{PREFIX}strip_name", "None")


def test_pasted_infotext_fills_the_rows(page):
    text = ('a photo of a cat\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 64x64, '
            'Sliders: "it_age:-1.5@0.25, it_text:2", Slider hashes: "it_age: ea7e902bf169"')
    set_value(page, "#txt2img_prompt textarea", text)
    page.find_element(By.ID, "paste").click()
    wait_for(lambda: value_of(page, f"{PREFIX}name_1 input") == "it_text", 20)
    assert value_of(page, f"{PREFIX}enable-checkbox input") is True
    assert (value_of(page, f"{PREFIX}name_0 input"), value_of(page, f"{PREFIX}alpha_0 input[type=number]"),
            value_of(page, f"{PREFIX}start_0 input[type=number]")) == ("it_age", "-1.5", "0.25")
    assert value_of(page, f"{PREFIX}alpha_1 input[type=number]") == "2"
    assert js(page, f"return getComputedStyle(gradioApp().querySelector('{PREFIX}row_1')).display") != "none"
    assert value_of(page, "#txt2img_prompt textarea") == "a photo of a cat"


def test_cards_add_and_remove_tags_even_with_negative_alpha(page):
    tab = page.find_element(By.XPATH, "//div[@id='txt2img_extra_tabs']//button[normalize-space()='Sliders']")
    tab.click()
    cards = wait_for(lambda: page.find_elements(By.CSS_SELECTOR, "#txt2img_sliders_cards .card"), 20)
    assert {"it_age", "it_text", "it_xl"} <= {c.get_attribute("data-name") for c in cards}
    card = next(c for c in cards if c.get_attribute("data-name") == "it_age")
    set_value(page, "#txt2img_prompt textarea", "a cat")
    js(page, "arguments[0].click()", card)
    assert value_of(page, "#txt2img_prompt textarea") == "a cat <slider:it_age:1>"
    set_value(page, "#txt2img_prompt textarea", "a cat <slider:it_age:-2.5> more")
    js(page, "arguments[0].click()", card)
    assert value_of(page, "#txt2img_prompt textarea") == "a cat more"



def test_train_tab_trains_a_slider_whose_card_then_appears(page, webui):
    name = f"it_tab_{uuid.uuid4().hex[:6]}"
    page.find_element(By.XPATH, "//div[@id='tabs']//button[normalize-space()='Concept Sliders']").click()
    wait_for(lambda: page.find_element(By.ID, "sliders_train_start").is_displayed(), 20)
    set_value(page, "#sliders_train_name textarea, #sliders_train_name input", name)
    for field, text in (("target", "person"), ("positive", "person, very old"), ("negative", "person, very young")):
        set_value(page, f"#sliders_train_{field} textarea, #sliders_train_{field} input", text)
    set_value(page, "#sliders_train_iterations input[type=number]", 2)
    set_value(page, "#sliders_train_resolution input[type=number]", 64)
    set_value(page, "#sliders_train_advanced textarea", '{"max_denoising_steps": 4}')
    if value_of(page, "#sliders_train_preview input"):
        js(page, "gradioApp().querySelector('#sliders_train_preview input').click()")
    # Settings: a start of its own, trained from there.
    js(page, "gradioApp().querySelector('#sliders_train_settings .label-wrap').click()")
    time.sleep(1)
    set_value(page, "#sliders_train_default_start input[type=number]", 0.5)
    for box, wanted in (("estimate_start", False), ("train_from_start", True)):
        if value_of(page, f"#sliders_train_{box} input") != wanted:
            js(page, f"gradioApp().querySelector('#sliders_train_{box} input').click()")
    time.sleep(1)
    screenshot(page, "#tab_concept_sliders", "train-tab.png")
    page.find_element(By.ID, "sliders_train_start").click()
    result = wait_for(lambda: "Trained slider" in (text := js(page, "return gradioApp().querySelector("
                                                                   "'#sliders_train_result').innerText")) and text, 900)
    assert f"Trained slider {name} (2 iterations)" in result and f"{name}.safetensors" in result
    listed = {s["name"]: s for s in webui.request("GET", "/sliders/v1/sliders")}
    assert listed[name]["default_start"] == 0.5
    assert json.loads(listed[name]["metadata"]["sliders.training"])["trained_from"] == 0.5
    # "Train among these sliders" offers it after a rescan (the list is read when the page is built).
    page.find_element(By.ID, "sliders_train_train_among_refresh").click()
    time.sleep(2)
    page.find_element(By.CSS_SELECTOR, "#sliders_train_train_among input").click()
    wait_for(lambda: name in [li.text for li in page.find_elements(
        By.CSS_SELECTOR, "#sliders_train_train_among ul.options li")], 20)
    # The Extra Networks pages were rebuilt after the run: the new card is there without a manual refresh.
    page.find_element(By.XPATH, "//div[@id='tabs']//button[normalize-space()='txt2img']").click()
    page.find_element(By.XPATH, "//div[@id='txt2img_extra_tabs']//button[normalize-space()='Sliders']").click()
    wait_for(lambda: name in {c.get_attribute("data-name")
                              for c in page.find_elements(By.CSS_SELECTOR, "#txt2img_sliders_cards .card")}, 60)
    assert name in js(page, "return gradioApp().querySelector('#img2img_sliders_cards').innerHTML")
