"""Per-batch slider plans: prompt tags of every image + job-wide requests → per-image α columns."""

import pytest

from lib_sliders.apply.job_plan import ResolvedSlider, SliderRequest, plan_batch, varies_across_images
from lib_sliders.errors import SliderError, SliderFileError
from lib_sliders.files.lora import SliderNetwork
from lib_sliders.prompt.prompt_tags import AlphaSpec


def make_resolver(default_starts=None, broken=()):
    networks = {}
    calls = []

    def resolve(name):
        calls.append(name)
        if name in broken:
            raise SliderFileError(f"/sliders/{name}.safetensors", "made for SDXL, but the loaded model is SD 1.x")
        if name not in ("age", "smile", "light"):
            raise SliderError(f"slider {name!r} not found")
        network = networks.setdefault(name, SliderNetwork(name=name, arch=frozenset({"sd1"})))
        return ResolvedSlider(network, (default_starts or {}).get(name, 0.0))

    resolve.calls = calls
    return resolve


def alphas(plan):
    return {s.name: s.image_alphas for s in plan.sliders}


def test_every_prompt_is_read_and_images_without_a_tag_get_zero():
    plan = plan_batch(["a <slider:age:2>", "b", "c <slider:smile:-1> <slider:age:0.5>"], [0, 1, 2], 3, [],
                      make_resolver(), 20)
    assert alphas(plan) == {"age": [2.0, 0.0, 0.5], "smile": [0.0, 0.0, -1.0]}
    assert plan.problems == []
    assert all(s.from_prompt for s in plan.sliders)


def test_spread_and_cycle_follow_the_job_index_not_the_batch_index():
    # Second batch (job images 3..5) of a 6-image job.
    plan = plan_batch(["x <slider:age:-2..3>"] * 3, [3, 4, 5], 6, [], make_resolver(), 20)
    assert alphas(plan)["age"] == pytest.approx([1.0, 2.0, 3.0])
    plan = plan_batch(["x <slider:age:1|0|-1>"] * 2, [2, 3], 4, [], make_resolver(), 20)
    assert alphas(plan)["age"] == [-1.0, 1.0]


def test_requests_apply_to_every_image_and_are_recorded_for_the_infotext():
    request = SliderRequest("smile", AlphaSpec("spread", (-1.0, 1.0)), start=0.25, source="Sliders row 1")
    plan = plan_batch(["a", "b <slider:age>"], [0, 1], 2, [request], make_resolver(), 20)
    assert alphas(plan) == {"smile": [-1.0, 1.0], "age": [0.0, 1.0]}  # a tag without α gets 1
    assert plan.requested == [[("smile", -1.0, 0.25)], [("smile", 1.0, 0.25)]]
    smile = next(s for s in plan.sliders if s.name == "smile")
    assert (smile.start, smile.stop, smile.from_prompt) == (0.25, 1.0, False)


def test_same_slider_same_window_adds_up_different_windows_stay_apart():
    plan = plan_batch(["<slider:age:1> <slider:age:0.5> <slider:age:1:start=0.5>"], [0], 1, [],
                      make_resolver(), 10)
    windows = sorted((s.start, s.image_alphas[0]) for s in plan.sliders)
    assert windows == [(0.0, 1.5), (0.5, 1.0)]


def test_the_files_default_start_applies_when_the_tag_gives_no_window():
    resolve = make_resolver(default_starts={"age": 0.3})
    plan = plan_batch(["<slider:age:1>", "<slider:age:1:start=0>"], [0, 1], 2, [], resolve, 10)
    assert sorted(s.start for s in plan.sliders) == [0.0, 0.3]
    plan = plan_batch(["<slider:age:1:start=5>"], [0], 1, [], resolve, 10)  # absolute step 5 of 10
    assert plan.sliders[0].start == 0.5


def test_problems_name_the_tag_and_the_rest_goes_on():
    resolve = make_resolver(broken=("light",))
    prompts = ["<slider:nope:1> <slider:age:x> <slider:light:1> <slider:smile:1>"] * 2
    plan = plan_batch(prompts, [0, 1], 2, [SliderRequest("ghost", AlphaSpec("value", (1.0,)), source="row 2")],
                      resolve, 10)
    assert alphas(plan) == {"smile": [1.0, 1.0]}
    text = "\n".join(plan.problems)
    assert "<slider:nope:1>" in text and "not found" in text
    assert "<slider:age:x>" in text and "not a number" in text
    assert "light.safetensors" in text and "SDXL" in text
    assert "row 2" in text
    assert len(plan.problems) == 4  # each once, although every image repeats them
    assert resolve.calls.count("nope") == 1  # resolved once per batch


def test_zero_alpha_everywhere_plans_nothing():
    plan = plan_batch(["<slider:age:0>"], [0], 1, [SliderRequest("smile", AlphaSpec("value", (0.0,)))],
                      make_resolver(), 10)
    assert not plan and plan.sliders == []


def test_a_window_with_no_step_left_is_a_problem():
    plan = plan_batch(["<slider:age:1:start=8:stop=0.5>"], [0], 1, [], make_resolver(), 10)
    assert plan.sliders == [] and "no sampling step" in plan.problems[0]


def test_prompt_and_index_counts_must_match():
    with pytest.raises(ValueError):
        plan_batch(["a"], [0, 1], 2, [], make_resolver(), 10)


def test_a_job_is_a_strip_when_some_alpha_varies_between_images():
    spread = SliderRequest("age", AlphaSpec("spread", (-2.0, 2.0)))
    assert varies_across_images([spread], ["a photo"])
    assert varies_across_images([], ["a photo <slider:age:1|2>", "x"])
    assert varies_across_images([], ["x", "y <slider:age:-1..1:start=0.2>"])
    # Not strips: one α everywhere, a "spread" or cycle of equal values, different fixed tags, broken tags.
    assert not varies_across_images([SliderRequest("age", AlphaSpec("value", (2.0,)))], ["a photo"])
    assert not varies_across_images([SliderRequest("age", AlphaSpec("spread", (1.0, 1.0)))], ["<slider:a:2|2>"])
    assert not varies_across_images([], ["<slider:age:2>", "<slider:age:-1>", "<slider:age:x..y>", "<slider:b>"])
