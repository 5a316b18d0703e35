"""The extension's UI side inside the webui double: accordion (gradio 3.41.2), settings, the Extra Networks
page and its card editor, the card-click JavaScript (run with node) and the HTTP route."""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from webui_double.conftest_helpers import REPO_ROOT, webui_env

pytestmark = pytest.mark.filterwarnings("ignore:Please use `import python_multipart`:PendingDeprecationWarning")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with webui_env(str(tmp_path_factory.mktemp("webui"))) as environment:
        yield environment


@pytest.fixture(autouse=True)
def fresh(env):
    env.reset()


def block(env, item_id):
    """Our component whose elem_id is ``Script.elem_id(item_id)``."""
    elem_id = env.script.elem_id(item_id)
    return next(b for b in env.demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def handler(env, item_id, trigger, name=None):
    """The function gradio registered for ``trigger`` ("change", "click", "select") of one of our components."""
    target = block(env, item_id)._id
    found = [fn for fn, dep in zip(env.demo.fns, env.demo.dependencies, strict=True)
             if target in dep["targets"] and dep["trigger"] == trigger and fn.fn is not None
             and (name is None or fn.fn.__name__ == name)]
    assert len(found) == 1, (item_id, trigger, len(found))
    return found[0]


# --------------------------------------------------------------------------------------------- accordion


def test_accordion_builds_in_the_txt2img_ui(env):
    script = env.script
    assert script.name == "concept sliders" and script.alwayson
    assert script.args_to - script.args_from == 1
    [state] = script.controls
    assert state.value == {"enabled": False, "sliders": []}
    ids = {getattr(b, "elem_id", None) for b in env.demo.blocks.values()}
    assert {"script_txt2img_concept_sliders_enable", "script_txt2img_concept_sliders_enable-checkbox",
            "script_txt2img_concept_sliders_name_0", "script_txt2img_concept_sliders_alpha_3",
            "script_txt2img_concept_sliders_strip_name"} <= ids
    accordion = block(env, "enable-checkbox")
    assert accordion is env.script.infotext_fields[0][0] and accordion.value is False and not accordion.visible
    names = [c[0] if isinstance(c, tuple) else c for c in block(env, "name_0").choices]
    assert names == ["None", "age", "misfit", "smile", "words", "xl"]
    assert "Sliders" in env.runner.paste_field_names
    assert block(env, "refresh").webui_tooltip  # the webui's tooltip= extension reached the button


def test_no_host_note_outside_forge(env):
    # No note in the accordion on any host now (on Forge only the Train tab has one: test_webui_forge.py).
    assert env.script.elem_id("host_note") not in {getattr(b, "elem_id", None) for b in env.demo.blocks.values()}


def test_accordion_builds_in_img2img_too(env):
    import gradio as gr
    from modules import errors, scripts

    runner = scripts.ScriptRunner()
    runner.initialize_scripts(is_img2img=True)
    with gr.Blocks() as demo:
        runner.setup_ui()
    assert errors.reported == []
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert "script_img2img_concept_sliders_enable" in ids and "script_img2img_concept_sliders_name_0" in ids


def test_change_handler_composes_the_script_argument(env):
    [state] = env.script.controls
    change = handler(env, "alpha_1", "change")
    assert change.outputs == [state] and handler(env, "enable-checkbox", "change").fn is change.fn
    rows = 4
    names = ["age", "smile", "None", "age"]
    alphas = [2.0, -1.0, 0.5, 3.0]
    starts = [0.0, 0.25, 0.0, 0.0]
    value = change.fn(True, 2, *names, *alphas, *starts, "smile", -2.0, 2.0)
    assert len(change.inputs) == 2 + 3 * rows + 3
    # Only the visible rows count (the 4th, hidden, is ignored); the strip row adds a spread.
    assert value == {"enabled": True, "sliders": [{"name": "age", "alpha": 2.0, "start": 0.0},
                                                  {"name": "smile", "alpha": -1.0, "start": 0.25},
                                                  {"name": "smile", "alpha": "-2..2"}]}
    # What the UI composes generates what the same tags do.
    p = env.make_p("a photo", value, batch_size=2)
    tagged = env.make_p("a photo <slider:age:2> <slider:smile:-1:start=0.25> <slider:smile:-2..2>", batch_size=2)
    assert torch.equal(env.run(p).latents, env.run(tagged).latents)


def test_picking_a_slider_offers_its_recommended_range(env):
    pick = handler(env, "name_0", "select")
    minimum, start = pick.fn("age")
    assert (minimum["minimum"], minimum["maximum"]) == (-4.0, 4.0) and start["value"] == 0.0
    with open(os.path.join(env.sliders_dir, "smile.json"), "w", encoding="utf8") as file:
        json.dump({"alpha range": [-1, 6], "default start": 0.3}, file)
    minimum, start = pick.fn("smile")
    assert (minimum["minimum"], minimum["maximum"]) == (-6.0, 6.0) and start["value"] == 0.3
    assert pick.fn("None") == pick.fn("nope") == ({"__type__": "generic_update"}, {"__type__": "generic_update"})
    os.remove(os.path.join(env.sliders_dir, "smile.json"))


def test_rows_add_remove_and_refresh(env):
    assert handler(env, "add", "click").fn(4) == 4 and handler(env, "add", "click").fn(2) == 3
    count, *cleared = handler(env, "remove", "click").fn(3)
    assert count == 2 and cleared[2]["value"] == "None" and [len(u) for u in cleared] == [1, 1, 2, 1]
    shown = handler(env, "rows", "change", "show_rows").fn(2)
    assert [update["visible"] for update in shown] == [True, True, False, False]
    assert handler(env, "reset_2", "click").fn() == 0.0
    refresh = handler(env, "refresh", "click")
    shutil.copy(os.path.join(env.sliders_dir, "age.safetensors"), os.path.join(env.sliders_dir, "older.safetensors"))
    try:
        updates = refresh.fn()
        assert all("older" in update["choices"] for update in updates)
    finally:
        os.remove(os.path.join(env.sliders_dir, "older.safetensors"))
        refresh.fn()


def test_settings_are_registered_with_defaults(env):
    shared = env.m.shared
    assert shared.opts.sliders_accordion_rows == 4
    assert shared.options_templates["sliders_accordion_rows"].section == ("concept_sliders", "Concept Sliders")
    assert "Reload UI" in shared.options_templates["sliders_accordion_rows"].comment_after
    extra = os.path.join(env.root, "more")
    os.makedirs(extra, exist_ok=True)
    shutil.copy(os.path.join(env.sliders_dir, "age.safetensors"), os.path.join(extra, "older.safetensors"))
    holder = sys.modules["lib_sliders.webui.script"].library
    assert "older" not in holder().names()
    shared.opts.sliders_extra_dirs = extra  # a settings change: the library is rebuilt for it
    assert "older" in holder().names()


# ------------------------------------------------------------------------------------ Extra Networks page


def page_of(env):
    from modules import extra_networks, ui_extra_networks

    assert "slider" in extra_networks.extra_network_registry
    return next(p for p in ui_extra_networks.extra_pages if p.title == "Sliders")


def test_cards_insert_the_tag_with_our_click_handler(env):
    from modules import ui_extra_networks

    page = page_of(env)
    assert os.path.abspath(env.sliders_dir) in ui_extra_networks.allowed_dirs
    items = page.refresh_items()
    assert sorted(items) == ["age", "misfit", "smile", "words", "xl"]
    item = items["age"]
    assert item["prompt"] == ui_extra_networks.quote_js("<slider:age:1>")
    assert html.unescape(page.card_onclick("txt2img", item)) == 'return slidersCardClicked(event, "age", "1")'
    assert item["local_preview"].endswith(os.path.join("sliders", "age.png"))
    assert "α -4..4" in item["search_terms"]
    env.m.shared.opts.sliders_default_alpha = -1.5
    assert page.create_item("age")["prompt"] == ui_extra_networks.quote_js("<slider:age:-1.5>")


@pytest.mark.filterwarnings("ignore:gr.Box is deprecated:DeprecationWarning")  # the webui's editor uses gr.Box
def test_card_editor_reads_and_writes_user_metadata(env):
    import gradio as gr

    page = page_of(env)
    page.refresh_items()
    with gr.Blocks():
        editor = page.create_user_metadata_editor(None, "txt2img")
        editor.create_ui()
    values = editor.put_values_into_components("smile")
    assert len(values) == 8 and values[0] == "smile" and values[5:] == [-4.0, 4.0, 0.0]
    editor.save_user_metadata("smile", "A big smile", "notes", -2.0, 5.0, 0.2)
    path = os.path.join(env.sliders_dir, "smile.json")
    try:
        with open(path, encoding="utf8") as file:
            saved = json.load(file)
        assert saved["alpha range"] == [-2.0, 5.0] and saved["default start"] == 0.2
        item = page.refresh_items()["smile"]
        assert item["description"] == "A big smile" and "α -2..5" in item["search_terms"]
        # The saved default start applies to the next job that doesn't give one.
        pick = handler(env, "name_1", "select")
        assert pick.fn("smile")[1]["value"] == 0.2
    finally:
        os.remove(path)


# ------------------------------------------------------------------------------------------- JavaScript


NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_card_click_toggles_the_tag():
    cases = [
        ("a photo", "age", "1", " ", "a photo <slider:age:1>"),
        ("", "age", "-1.5", " ", "<slider:age:-1.5>"),
        ("a photo <slider:age:-2>", "age", "1", " ", "a photo"),
        ("<slider:age:-2> a photo", "age", "1", " ", "a photo"),
        ("a, <slider:age:-2..2:start=0.3>, b", "age", "1", ", ", "a, b"),
        ("a, b", "age", "-2", ", ", "a, b, <slider:age:-2>"),
        ("x <slider: age :1>", "age", "1", " ", "x"),
        ("x <slider:agex:1>", "age", "1", " ", "x <slider:agex:1> <slider:age:1>"),
        ("x <slider:a.b:1>", "a+b", "2", " ", "x <slider:a.b:1> <slider:a+b:2>"),
        ("x <slider:a+b:1>", "a+b", "2", " ", "x"),
        ("x <slider:(c)[d]:1> y", "(c)[d]", "1", " ", "x y"),
        ("x <lora:age:1>", "age", "1", " ", "x <lora:age:1> <slider:age:1>"),
    ]
    script = (
        "const s = require(process.argv[1]);"
        "const cases = JSON.parse(process.argv[2]);"
        "console.log(JSON.stringify(cases.map(c => s.slidersToggleTag(c[0], c[1], c[2], c[3]))));"
    )
    out = subprocess.run([NODE, "-e", script, os.path.join(REPO_ROOT, "javascript", "sliders.js"), json.dumps(cases)],
                         capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(out.stdout) == [case[4] for case in cases]


# ------------------------------------------------------------------------------------------------- API


@pytest.mark.filterwarnings("ignore:The anyio.abc.BlockingPortal alias is deprecated:DeprecationWarning")
def test_route_lists_the_installed_sliders(env):
    try:
        from fastapi.testclient import TestClient

        response = TestClient(env.app).get("/sliders/v1/sliders")
        assert response.status_code == 200
        body = response.json()
    except (ImportError, TypeError):  # httpx too new for this starlette: call the route directly
        route = next(r for r in env.app.routes if getattr(r, "path", "") == "/sliders/v1/sliders")
        body = json.loads(json.dumps(route.endpoint()))
    by_name = {item["name"]: item for item in body}
    route = next(r for r in env.app.routes if getattr(r, "path", "") == "/sliders/v1/refresh")
    assert route.endpoint() == {"count": 5} and "POST" in route.methods
    assert sorted(by_name) == ["age", "misfit", "smile", "words", "xl"]
    assert by_name["age"]["alpha_range"] == [-4.0, 4.0] and by_name["age"]["arch"] == "sd1"
    assert by_name["xl"]["arch"] == "sdxl"
    assert by_name["words"]["path"] == os.path.join(env.sliders_dir, "words.safetensors")


# -------------------------------------------------------------------------------------------- Reload UI


def test_reload_ui_registers_everything_once(env):
    from modules import errors, extra_networks, script_callbacks, scripts, ui_extra_networks

    xyz_labels = [a.label for a in env.xyz_module.axis_options]
    kept = list(scripts.scripts_data)
    script_callbacks.script_unloaded_callback()
    # Reload UI: callbacks cleared, scripts re-executed (lib_sliders stays cached), registries rebuilt.
    scripts.load_scripts([(d.basedir, d.path) for d in kept if d.path.endswith(".py") and "conftest" not in d.path])
    ui_extra_networks.initialize()
    extra_networks.initialize()
    script_callbacks.before_ui_callback()
    try:
        assert errors.reported == []
        new_xyz = next(d.module for d in scripts.scripts_data if d.script_class.__module__ == "xyz_grid.py")
        assert new_xyz is not env.xyz_module and [a.label for a in new_xyz.axis_options] == xyz_labels
        assert [p.title for p in ui_extra_networks.extra_pages] == ["Sliders"]
        assert list(extra_networks.extra_network_registry) == ["slider"]
        counts = {name: len(callbacks) for name, callbacks in script_callbacks.callback_map.items() if callbacks}
        assert counts == {"callbacks_app_started": 1, "callbacks_model_loaded": 1, "callbacks_before_ui": 1,
                          "callbacks_cfg_denoiser": 1, "callbacks_script_unloaded": 1, "callbacks_ui_tabs": 1,
                          "callbacks_infotext_pasted": 1}
        env.reset()
        tagged = env.run(env.make_p("a photo <slider:age:2>")).latents
        assert not torch.equal(tagged, env.run(env.make_p("a photo")).latents)
    finally:
        scripts.scripts_data[:] = kept
