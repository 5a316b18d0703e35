"""Which webui hosts the extension (``lib_sliders.webui.host_kind``): AUTOMATIC1111's or SD WebUI Forge and its forks.

Forge is told by its ``modules_forge`` package (the Forge flavour of the double puts it on ``sys.path``) or by a
model with ``forge_objects``; the fork's name comes from ``modules_forge/forge_version.py``. See
``test_webui_forge.py`` for what works there (generation) and what is still refused (training).
"""

from __future__ import annotations

import sys
import types

from webui_double.forge_double import forge_on_path


def test_detection_by_package_or_model_and_the_forks_name(monkeypatch):
    from lib_sliders.webui import host_kind

    monkeypatch.setattr(host_kind, "SUPPORTED_ON_FORGE", frozenset())  # the refusal's wording, for any feature

    assert host_kind.detect() == host_kind.A1111 and not host_kind.is_forge()
    assert host_kind.refusal(host_kind.GENERATION) is None and host_kind.ui_note(host_kind.TRAINING) is None
    # A model Forge loaded says so even where the package isn't found.
    assert host_kind.is_forge(types.SimpleNamespace(forge_objects=None))
    with forge_on_path():
        kind = host_kind.detect()
        assert kind.forge and kind.label == "SD WebUI Forge (2.0.1v1.10.1)"
        assert "SD WebUI Forge (2.0.1v1.10.1)" in host_kind.refusal(host_kind.GENERATION)
        import modules_forge.forge_version as forge_version

        for version, release, label in (("classic", None, "SD WebUI Forge Classic"),
                                        ("neo", "2.27", "SD WebUI Forge Neo (2.27)"),
                                        ("1.0.0v2-v1.10.1RC", None, "SD WebUI Forge (1.0.0v2-v1.10.1RC)")):
            forge_version.version = version
            forge_version.__dict__.pop("release", None)
            if release:
                forge_version.release = release
            assert host_kind.detect().label == label
    assert "modules_forge" not in sys.modules and not host_kind.is_forge()


def test_prompts_with_slider_tags():
    from lib_sliders.webui.host_kind import prompts_have_sliders

    assert prompts_have_sliders(["a", "a <slider:age:2> b"])
    assert not prompts_have_sliders(["a <lora:x:1>", "", None])
    assert not prompts_have_sliders(None)


def test_a_job_is_told_once_and_only_when_it_asked_for_sliders(monkeypatch):
    from lib_sliders.webui import host_kind

    told = []

    def report(p, message):
        told.append(message)

    with forge_on_path():  # generation works on Forge now, training too where Forge's own backend is
        assert host_kind.GENERATION in host_kind.SUPPORTED_ON_FORGE
        assert not host_kind.refuse_generation(types.SimpleNamespace(), report, True) and told == []
        assert host_kind.ui_note(host_kind.GENERATION) is None
        assert host_kind.refusal(host_kind.TRAINING) is None and host_kind.ui_note(host_kind.TRAINING) is None
        monkeypatch.setattr(host_kind, "forge_backend_installed", lambda: False)  # Forge Classic, reForge
        assert "training sliders needs SD WebUI Forge's own backend" in host_kind.refusal(host_kind.TRAINING)
        monkeypatch.undo()
    # The refusal itself, for a feature not listed (as generation was before its backend).
    monkeypatch.setattr(host_kind, "SUPPORTED_ON_FORGE", frozenset())
    assert not host_kind.refuse_generation(types.SimpleNamespace(), report, True)  # A1111: go ahead
    with forge_on_path():
        p = types.SimpleNamespace()
        assert host_kind.refuse_generation(p, report, False) and told == []  # no sliders asked: silent
        assert host_kind.refuse_generation(p, report, True) and host_kind.refuse_generation(p, report, True)
        assert len(told) == 1 and told[0].startswith("sliders are not applied on SD WebUI Forge")
        assert host_kind.refuse_generation(types.SimpleNamespace(), report, True) and len(told) == 2  # next job
        # Once the Forge backend of a feature is done, listing it lets it through.
        monkeypatch.setattr(host_kind, "SUPPORTED_ON_FORGE", frozenset({host_kind.GENERATION}))
        assert not host_kind.refuse_generation(types.SimpleNamespace(), report, True)
        assert host_kind.ui_note(host_kind.GENERATION) is None and host_kind.ui_note(host_kind.TRAINING)
