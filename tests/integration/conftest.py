"""Opt-in tests against a running webui: set ``SD_WEBUI_URL`` (e.g. ``http://127.0.0.1:7861``).

The webui must have this extension installed, a random-weight SD 1.x checkpoint loaded, and the sliders of
``make_sliders.py`` in its sliders folder. ``SD_WEBUI_LOG`` (optional) is the server's console log, for the
checks that problems are reported there. See docs/development.md → Integration tests.

Start the webui with ``--disable-opt-split-attention`` (as the webui's own CI does): on a CPU its default
attention splits work by the *free RAM* of the moment, so the same image can differ in the last bit between
two requests when other programs use memory, and many checks here are bitwise.

The host may be AUTOMATIC1111's webui or SD WebUI Forge (``WebUI.forge``, from the server's own settings): tests
that can't apply on one are skipped there with the reason (training while the host refuses it, A1111-only
settings); ``test_webui_forge_http.py`` holds the Forge-only checks.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

URL = os.environ.get("SD_WEBUI_URL", "").rstrip("/")

collect_ignore = ["make_sliders.py", "make_random_checkpoint.py"]


def pytest_collection_modifyitems(config, items):
    if URL:
        return
    skip = pytest.mark.skip(reason="set SD_WEBUI_URL to run the tests against a real webui")
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(skip)


class WebUI:
    def __init__(self, url: str):
        self.url = url

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 900) -> dict | list:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{method} {path}: HTTP {err.code}: {err.read()[:2000]!r}") from None

    def txt2img(self, prompt: str, seed: int = 1, **fields) -> tuple[list[np.ndarray], dict]:
        body = {"prompt": prompt, "seed": seed, "steps": 3, "width": 64, "height": 64, "sampler_name": "Euler",
                "cfg_scale": 7, "batch_size": 1, "n_iter": 1, **fields}
        result = self.request("POST", "/sdapi/v1/txt2img", body)
        images = [decode(image) for image in result["images"]]
        return images, json.loads(result["info"])

    def slider_args(self, sliders: list[dict], enabled: bool = True) -> dict:
        return {"concept sliders": {"args": [{"enabled": enabled, "sliders": sliders}]}}

    @functools.cached_property
    def forge(self) -> bool:
        """Whether the server is SD WebUI Forge (or a fork): its settings are in ``/sdapi/v1/options`` beside the
        webui's, named ``forge_…`` (``forge_preset``, ``forge_unet_storage_dtype``, …: ``modules_forge/main_entry.py``).
        """
        return any(key.startswith("forge_") for key in self.request("GET", "/sdapi/v1/options"))

    @functools.cached_property
    def training_refusal(self) -> str | None:
        """Why the extension refuses to train on this host (``POST /sliders/v1/train`` → 422, field ``webui``), or
        None when it trains. Asked with an invalid body (rank 0), so nothing starts either way."""
        body = {"name": "it_refusal_probe", "rank": 0, "iterations": 1,
                "prompts": [{"target": "a", "positive": "b", "negative": "c"}]}
        request = urllib.request.Request(self.url + "/sliders/v1/train", data=json.dumps(body).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raise AssertionError(f"an invalid training body was accepted: {response.read()[:500]!r}")
        except urllib.error.HTTPError as err:
            assert err.code == 422, (err.code, err.read()[:500])
            problems = json.loads(err.read())["detail"]
        return next((p["problem"] for p in problems if p.get("field") == "webui"), None)


def decode(image_b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(image_b64))).convert("RGB")).astype(np.int16)


@pytest.fixture(scope="session")
def webui() -> WebUI:
    return WebUI(URL)


@pytest.fixture(scope="session")
def forge(webui) -> WebUI:
    """The webui, for a test that only applies on SD WebUI Forge."""
    if not webui.forge:
        pytest.skip("SD WebUI Forge only (this server is the AUTOMATIC1111 webui)")
    return webui


@pytest.fixture(scope="session")
def baseline(webui):
    images, info = webui.txt2img("a photo of a cat")
    return images[0]
