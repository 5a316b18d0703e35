"""The webui-facing pure logic: script arguments, X/Y/Z overrides, accordion state, user metadata."""

import json
from types import SimpleNamespace

import pytest

from lib_sliders.apply.job_plan import SliderRequest
from lib_sliders.prompt.infotext import SLIDERS_KEY, format_sliders
from lib_sliders.prompt.prompt_tags import AlphaSpec
from lib_sliders.webui.args import EMPTY_ARGS, parse_args
from lib_sliders.webui.overrides import apply_overrides
from lib_sliders.webui.ui_state import NO_SLIDER, alpha_limits, compose_state, rows_from_infotext
from lib_sliders.webui.user_metadata import merged_info, read_user_metadata, user_metadata_path

# ----------------------------------------------------------------------------------------- args


def test_api_dict_becomes_requests():
    parsed = parse_args({"sliders": [
        {"name": "age", "alpha": 2, "start": 0.2},
        {"name": "smile", "alpha": "-2..2"},
        {"name": "light", "alpha": [1, -1]},
        {"name": "detail", "alpha": "1|0", "stop": 10, "te": 0.5, "unet": 1.5},
        {"name": "plain"},
    ]})
    assert parsed.problems == []
    by_name = {r.name: r for r in parsed.requests}
    assert by_name["age"].alpha == AlphaSpec("value", (2.0,)) and by_name["age"].start == 0.2
    assert by_name["smile"].alpha == AlphaSpec("spread", (-2.0, 2.0))
    assert by_name["light"].alpha == AlphaSpec("cycle", (1.0, -1.0))
    detail = by_name["detail"]
    assert (detail.stop, detail.te, detail.unet) == (10.0, 0.5, 1.5)
    assert by_name["plain"].alpha == AlphaSpec("value", (1.0,))
    assert "Sliders row 1" in by_name["age"].source


def test_json_string_and_disabled_and_empty():
    assert [r.name for r in parse_args(json.dumps({"sliders": [{"name": "a", "alpha": 1}]})).requests] == ["a"]
    assert parse_args({"enabled": False, "sliders": [{"name": "a", "alpha": 1}]}).requests == []
    assert parse_args(EMPTY_ARGS).requests == [] and parse_args(None).requests == []
    # An empty accordion row is not a problem.
    assert parse_args({"sliders": [{"name": "", "alpha": 0}]}).problems == []


@pytest.mark.parametrize(("value", "field"), [
    ({"sliders": [{"name": "a", "alpha": "x"}]}, "sliders[0].alpha"),
    ({"sliders": [{"name": "a", "alpha": True}]}, "sliders[0].alpha"),
    ({"sliders": [{"name": "a", "alpha": float("nan")}]}, "sliders[0].alpha"),
    ({"sliders": [{"name": "a", "alpha": [1, "b"]}]}, "sliders[0].alpha"),
    ({"sliders": [{"name": "a", "start": -1}]}, "sliders[0].start"),
    ({"sliders": [{"name": "a", "stat": 1}]}, "sliders[0]"),
    ({"sliders": [{"name": 3}]}, "sliders[0].name"),
    ({"sliders": ["age"]}, "sliders[0]"),
    ({"sliders": "age"}, "sliders"),
    ([1], "script argument"),
    ("{oops", "script argument"),
])
def test_bad_args_name_the_field_and_keep_the_rest(value, field):
    if isinstance(value, dict) and isinstance(value.get("sliders"), list):
        value = {"sliders": [*value["sliders"], {"name": "good", "alpha": 1}]}
    parsed = parse_args(value)
    assert len(parsed.problems) == 1 and parsed.problems[0].startswith(field)
    if isinstance(value, dict) and isinstance(value.get("sliders"), list):
        assert [r.name for r in parsed.requests] == ["good"]


# ------------------------------------------------------------------------------------ overrides


def make_p(prompts, override=None, hr=None):
    p = SimpleNamespace(all_prompts=list(prompts))
    if hr is not None:
        p.all_hr_prompts = list(hr)
    if override is not None:
        p.sliders_override = override
    return p


def test_override_rewrites_tags_and_keeps_other_arguments():
    p = make_p(["a <slider:age:1:stop=0.8> <lora:x:1>", "b"], {"alpha": {"age": -2.5}}, hr=["a <slider:age:1>"])
    requests = apply_overrides(p, [])
    assert p.all_prompts == ["a <slider:age:-2.5:stop=0.8> <lora:x:1>", "b"]
    assert p.all_hr_prompts == ["a <slider:age:-2.5>"]
    assert requests == []  # used by a tag: nothing added


def test_override_changes_requests_or_adds_one():
    request = SliderRequest("smile", AlphaSpec("value", (1.0,)), source="row")
    p = make_p(["x"], {"alpha": {"smile": 2.0, "age": -1.0}, "start": {"age": 0.4}})
    requests = apply_overrides(p, [request])
    assert [(r.name, r.alpha.values[0], r.start) for r in requests] == [("smile", 2.0, None), ("age", -1.0, 0.4)]


def test_axis_slider_with_axis_alpha_and_without_it():
    p = make_p(["x"], {"axis_slider": "age"})
    assert [(r.name, r.alpha.values[0]) for r in apply_overrides(p, [], default_alpha=1.5)] == [("age", 1.5)]
    p = make_p(["x"], {"axis_slider": "age", "axis_alpha": -3.0, "axis_start": 0.5})
    assert [(r.name, r.alpha.values[0], r.start) for r in apply_overrides(p, [])] == [("age", -3.0, 0.5)]
    # No axis slider: α and start go to every slider of the job.
    p = make_p(["<slider:age:1> <slider:smile:2:start=0.1>"], {"axis_alpha": 0.5, "axis_start": 0.2})
    request = SliderRequest("light", AlphaSpec("value", (1.0,)))
    requests = apply_overrides(p, [request])
    assert p.all_prompts == ["<slider:age:0.5:start=0.2> <slider:smile:0.5:start=0.2>"]
    assert [(r.name, r.alpha.values[0], r.start) for r in requests] == [("light", 0.5, 0.2)]


def test_override_matches_names_through_the_given_comparison_and_leaves_bad_tags():
    p = make_p(["<slider:Age:1> <slider:age:oops>"], {"alpha": {"age": 2.0}})
    apply_overrides(p, [], same=lambda a, b: a.lower() == b.lower())
    assert p.all_prompts == ["<slider:Age:2> <slider:age:oops>"]


def test_no_override_changes_nothing():
    p = make_p(["<slider:age:1>"])
    request = SliderRequest("a", AlphaSpec("value", (1.0,)))
    assert apply_overrides(p, [request]) == [request] and p.all_prompts == ["<slider:age:1>"]


# ----------------------------------------------------------------------------------- accordion


def test_compose_state_takes_visible_named_rows_and_the_strip():
    state = compose_state(True, 2, ["age", NO_SLIDER, "hidden"], [2, 1, 1], [0.2, 0, 0], ("smile", -2, 2.5))
    assert state == {"enabled": True, "sliders": [{"name": "age", "alpha": 2.0, "start": 0.2},
                                                  {"name": "smile", "alpha": "-2..2.5"}]}
    assert [r.name for r in parse_args(state).requests] == ["age", "smile"]
    assert parse_args(compose_state(False, 1, ["age"], [1], [0])).requests == []


def test_infotext_rows_round_trip():
    text = format_sliders([("age", 2.0, 0.2), ("a:b, c", -1.0, 0.0)])
    rows = rows_from_infotext({SLIDERS_KEY: text}, max_rows=4)
    assert rows == [("age", 2.0, 0.2), ("a:b, c", -1.0, 0.0)]
    assert rows_from_infotext({"Steps": "20"}, 4) is None
    assert len(rows_from_infotext({SLIDERS_KEY: "a:1, b:2, c:3"}, max_rows=2)) == 2


def test_alpha_limits_cover_the_recommended_range():
    assert alpha_limits(None, 3.0) == (-3.0, 3.0)
    assert alpha_limits((-1.0, 5.0), 3.0) == (-5.0, 5.0)


# ------------------------------------------------------------------------------- user metadata


def test_user_metadata_overrides_the_header(tmp_path):
    slider = tmp_path / "age.safetensors"
    info = {"alpha_range": (-3.0, 3.0), "default_start": 0.0, "description": None}
    assert read_user_metadata(str(slider)) == {}
    with open(user_metadata_path(str(slider)), "w", encoding="utf8") as f:
        json.dump({"alpha range": [-1, 4], "default start": 0.25, "description": "older ↔ younger"}, f)
    merged = merged_info(info, read_user_metadata(str(slider)))
    assert merged == {"alpha_range": (-1.0, 4.0), "default_start": 0.25, "description": "older ↔ younger"}
    bad = {"alpha range": [4, -1], "default start": 3, "description": 5}
    assert merged_info(info, bad) == info
    (tmp_path / "age.json").write_text("[not json", encoding="utf8")
    assert read_user_metadata(str(slider)) == {}
