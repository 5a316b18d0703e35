"""Pasting generation parameters in a real webui (PNG Info runs the same ``infotext_pasted`` callbacks as the
paste button): a slider renamed since the image was made is found again by its hash."""

from __future__ import annotations

import pytest

from .test_webui_http import PROMPT, _png_b64

pytestmark = pytest.mark.integration


def test_png_info_finds_a_renamed_slider_by_its_hash(webui):
    request = webui.slider_args([{"name": "it_age", "alpha": -1.5, "start": 0.25}])
    images, info = webui.txt2img(f"{PROMPT} <slider:it_age:1>", alwayson_scripts=request)
    # As if the file had been called "old age" when the image was made ("old age" isn't in the library).
    infotext = info["infotexts"][0].replace("it_age", "old age")
    assert "old age: " in infotext and "<slider:old age:1>" in infotext
    renamed = {"infotexts": [infotext]}
    params = webui.request("POST", "/sdapi/v1/png-info", {"image": "data:image/png;base64," + _png_b64(images[0],
                                                                                                     renamed)})
    parameters = params["parameters"]
    assert parameters["Sliders"] == "it_age:-1.5@0.25"
    assert parameters["Slider hashes"].startswith("it_age: ")
    assert parameters["Prompt"] == f"{PROMPT} <slider:it_age:1>"
