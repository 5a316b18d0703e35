"""Infotext fields for sliders (lib_sliders.prompt.infotext): formats, webui quoting, name escaping, round trips."""

import json
import random

import pytest

from lib_sliders.prompt.infotext import (
    HASHES_KEY,
    SLIDERS_KEY,
    ParsedSlider,
    escape_name,
    format_hashes,
    format_sliders,
    parse_hashes,
    parse_sliders,
    unescape_name,
)


def webui_quote(text: str) -> str:
    """``modules.infotext_utils.quote()`` (webui-host.md §4)."""
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def test_keys():
    assert (SLIDERS_KEY, HASHES_KEY) == ("Sliders", "Slider hashes")


def test_format_sliders():
    assert format_sliders([("age", 2.0, 0.2), ("smile", -1.0, 0)]) == "age:2@0.2, smile:-1"
    assert format_sliders([("age", 0.25), ParsedSlider("smile", 1.5)]) == "age:0.25, smile:1.5"
    assert format_sliders([("age", 1, None)]) == "age:1"
    assert format_sliders([]) == ""
    with pytest.raises(ValueError):
        format_sliders([("", 1.0)])


def test_parse_sliders():
    entries, problems = parse_sliders("age:2@0.2, smile:-1")
    assert entries == [ParsedSlider("age", 2.0, 0.2), ParsedSlider("smile", -1.0, 0.0)]
    assert problems == []
    assert parse_sliders("  age : 2 @ 0.2 ,smile:-1 ,")[0] == entries  # spaces, trailing comma
    assert parse_sliders("") == ([], [])
    assert parse_sliders("old age:+.5")[0] == [ParsedSlider("old age", 0.5, 0.0)]


def test_parse_sliders_quoted_value():
    value = format_sliders([("age", 2.0, 0.2), ("smile", -1.0)])
    quoted = webui_quote(value)
    assert quoted == '"age:2@0.2, smile:-1"'
    assert parse_sliders(quoted) == parse_sliders(value)
    assert parse_sliders(' "age:1" ')[0] == [ParsedSlider("age", 1.0)]


def test_parse_sliders_skips_malformed_items():
    entries, problems = parse_sliders("age:abc, smile:1, :2, lonely, a:1:2, b:1@x, c:nan, d:3")
    assert entries == [ParsedSlider("smile", 1.0), ParsedSlider("d", 3.0)]
    assert problems == [
        "'age:abc': α 'abc' is not a number",
        "':2': the slider name is empty",
        "'lonely': expected name:alpha[@start]",
        "'a:1:2': expected name:alpha[@start]",
        "'b:1@x': start 'x' is not a number",
        "'c:nan': α 'nan' is not a number",
    ]
    # Like the webui's unquote(), a value that isn't valid JSON is taken as it is rather than failing.
    assert parse_sliders('"age:1\\q"') == ([], ["'\"age:1\\q\"': α '1\\q\"' is not a number"])


def test_escape_names():
    assert escape_name("age") == "age"
    assert escape_name("a:b,c@d|e%f") == "a%3Ab%2Cc%40d%7Ce%25f"
    assert escape_name(" old age ") == "%20old age%20"
    assert escape_name("line\nbreak") == "line%0Abreak"
    assert escape_name("年齢 slider") == "年齢 slider"  # readable: only what must be escaped is
    for name in ("a:b,c@d|e%f", " old age ", "line\nbreak", "%41", "100%", 'say "hi"'):
        assert unescape_name(escape_name(name)) == name
    assert unescape_name("100%") == "100%"  # a stray '%' typed by hand stays


def test_awkward_names_round_trip():
    entries = [ParsedSlider("age, v2: final@best|x", 2.0, 0.5), ParsedSlider(" spaced ", -1.0)]
    value = format_sliders(entries)
    assert value == "age%2C v2%3A final%40best%7Cx:2@0.5, %20spaced%20:-1"
    assert parse_sliders(value) == (entries, [])
    assert parse_sliders(webui_quote(value)) == (entries, [])


def test_hashes():
    assert format_hashes({"age": "1a2b3c4d5e6f", "smile": "0f0e0d0c0b0a"}) == "age: 1a2b3c4d5e6f, smile: 0f0e0d0c0b0a"
    assert format_hashes([("a:b", "123")]) == "a%3Ab: 123"
    value = "age: 1a2b3c4d5e6f, smile: 0f0e0d0c0b0a"
    assert parse_hashes(value) == {"age": "1a2b3c4d5e6f", "smile": "0f0e0d0c0b0a"}
    assert parse_hashes(webui_quote(value)) == parse_hashes(value)
    assert parse_hashes("age:abc,  broken, :x, y:, z: 1:2, ok :  f00 ") == {"age": "abc", "ok": "f00"}
    assert parse_hashes(format_hashes({"a:b, c": "h1", " d ": "h2"})) == {"a:b, c": "h1", " d ": "h2"}


# Property-style round trip with a seeded generator (hypothesis isn't in the pinned test environment).
_NAME_CHARS = "abcXYZ09 _-.=/|@,:<>\"'%\n\r\t\u3000èé年齢🙂"


@pytest.mark.parametrize("seed", range(4))
def test_round_trip_random(seed):
    rng = random.Random(seed)
    for _ in range(100):
        entries = []
        for _ in range(rng.randint(0, 5)):
            name = "".join(rng.choice(_NAME_CHARS) for _ in range(rng.randint(1, 10)))
            alpha = float(f"{rng.uniform(-5, 5):.6g}")
            start = rng.choice([0.0, float(f"{rng.uniform(0, 1):.4g}"), float(rng.randint(2, 40))])
            entries.append(ParsedSlider(name, alpha, start))
        value = format_sliders(entries)
        assert "\n" not in value
        for text in (value, webui_quote(value)):
            assert parse_sliders(text) == (entries, [])
        hashes = {e.name: f"{rng.getrandbits(48):012x}" for e in entries}
        assert parse_hashes(webui_quote(format_hashes(hashes))) == hashes


# --------------------------------------------------------------------- sliders renamed since the image was made


def test_a_renamed_slider_is_found_by_its_hash_in_every_field():
    from lib_sliders.prompt.pasted_names import rename_by_hash

    params = {
        "Prompt": "a photo <slider:old age:2> <lora:old age:1> <slider: old age :-1:start=0.2> <slider:kept:1>",
        "Negative prompt": "blurry <slider:gone>",
        SLIDERS_KEY: format_sliders([("old age", 2.0, 0.3), ("kept", 1.0)]),
        HASHES_KEY: format_hashes({"old age": "aaaa", "kept": "bbbb", "gone": "cccc"}),
    }
    on_disk = {"aaaa": "new:age", "bbbb": "kept", "cccc": None}
    hashed = []

    def name_for_hash(short):
        hashed.append(short)
        return on_disk[short]

    renames = rename_by_hash(params, lambda name: name == "kept", name_for_hash)
    assert renames == {"old age": "new:age"}
    assert hashed == ["aaaa", "cccc"]  # a name the library knows is never looked up
    entries, problems = parse_sliders(params[SLIDERS_KEY])
    assert entries == [("new:age", 2.0, 0.3), ("kept", 1.0, 0.0)] and problems == []
    assert parse_hashes(params[HASHES_KEY]) == {"new:age": "aaaa", "kept": "bbbb", "gone": "cccc"}
    # A name with ':' can't be written into a tag: those tags stay as they were; other networks are left alone.
    assert params["Prompt"] == ("a photo <slider:old age:2> <lora:old age:1> <slider: old age :-1:start=0.2> "
                                "<slider:kept:1>")
    assert params["Negative prompt"] == "blurry <slider:gone>"


def test_renamed_tags_keep_their_arguments():
    from lib_sliders.prompt.pasted_names import rename_by_hash, rename_tags

    assert rename_tags("<slider: a :2:start=0.2> <slider:a> <slider:ab:1> <lora:a:1>", {"a": "b"}) == (
        "<slider:b:2:start=0.2> <slider:b> <slider:ab:1> <lora:a:1>")
    params = {"Prompt": "x <slider:a:1>", HASHES_KEY: "a: 1234"}
    assert rename_by_hash(params, lambda name: False, lambda short: "b") == {"a": "b"}
    assert params == {"Prompt": "x <slider:b:1>", HASHES_KEY: "b: 1234"}  # no Sliders field is added
    untouched = {"Prompt": "x <slider:a:1>"}
    assert rename_by_hash(untouched, lambda name: False, lambda short: pytest.fail("no hashes to look up")) == {}
    assert untouched == {"Prompt": "x <slider:a:1>"}
