"""Generation-parameters text (infotext) for sliders: format and parse the two fields.

``Sliders: "age:2@0.2, smile:-1"``
    one ``name:alpha[@start]`` item per slider, ``, ``-separated; ``@start`` is omitted when 0.
``Slider hashes: "age: 1a2b3c4d5e6f, smile: 0f0e0d0c0b0a"``
    in the style of the webui's ``Lora hashes``.

The webui JSON-quotes values containing ``,`` ``:`` or a newline (``infotext_utils.quote()``) and
unquotes them when pasting; the parsers accept a value either way.

Names: ``%``, ``,``, ``:``, ``@``, ``|``, ``"``, control characters and whitespace at either end are
percent-encoded (UTF-8, as in URLs: ``a:b`` → ``a%3Ab``), so every name round-trips and stays
readable. The webui's Lora hashes simply drop ``:`` and ``,``, which loses names; a percent sign is
rare in file names, and it is the one character whose escaping is always needed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import NamedTuple
from urllib.parse import quote, unquote

from .prompt_tags import format_number, parse_number

SLIDERS_KEY = "Sliders"
HASHES_KEY = "Slider hashes"

_RESERVED = set('%,:@|"')  # '%' itself, the separators of both fields, and '|' and '"' for later use


class ParsedSlider(NamedTuple):
    """One ``Sliders`` item. A NamedTuple, so plain ``(name, alpha[, start])`` tuples format too."""

    name: str
    alpha: float
    start: float = 0.0


def escape_name(name: str) -> str:
    """``name`` with the reserved characters percent-encoded (see the module docstring)."""
    if not name:
        raise ValueError("an infotext slider name must not be empty")
    last = len(name) - 1

    def needs(i: int, ch: str) -> bool:
        return ch in _RESERVED or not ch.isprintable() or (ch.isspace() and i in (0, last))

    return "".join(quote(ch, safe="") if needs(i, ch) else ch for i, ch in enumerate(name))


def unescape_name(text: str) -> str:
    """The inverse of ``escape_name``; a stray ``%`` typed by hand stays as it is."""
    return unquote(text.strip())


def _unquote(value: str) -> str:
    """The webui's ``infotext_utils.unquote()``: a JSON string if the value is one, else as is."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        if isinstance(decoded, str):
            return decoded
    return value


def format_sliders(entries: Iterable[tuple]) -> str:
    """``age:2@0.2, smile:-1`` from ``(name, alpha[, start])`` entries; start None or 0 is omitted."""
    items = []
    for entry in entries:
        name, alpha, *rest = entry
        start = rest[0] if rest else None
        item = f"{escape_name(name)}:{format_number(alpha)}"
        if start:
            item += f"@{format_number(start)}"
        items.append(item)
    return ", ".join(items)


def parse_sliders(value: str) -> tuple[list[ParsedSlider], list[str]]:
    """(entries, problems) from a ``Sliders`` value; a malformed item is skipped and described."""
    entries: list[ParsedSlider] = []
    problems: list[str] = []
    for raw in _unquote(value).split(","):
        item = raw.strip()
        if not item:
            continue  # "a:1, , b:2" or a trailing comma: nothing lost
        name, sep, rest = item.partition(":")
        if not sep or ":" in rest:
            problems.append(f"'{item}': expected name:alpha[@start]")
            continue
        if not name.strip():
            problems.append(f"'{item}': the slider name is empty")
            continue
        alpha_text, at, start_text = rest.partition("@")
        alpha = parse_number(alpha_text)
        if alpha is None:
            problems.append(f"'{item}': α '{alpha_text.strip()}' is not a number")
            continue
        start = parse_number(start_text) if at else 0.0
        if start is None:
            problems.append(f"'{item}': start '{start_text.strip()}' is not a number")
            continue
        entries.append(ParsedSlider(unescape_name(name), alpha, start))
    return entries, problems


def format_hashes(entries: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """``age: 1a2b3c4d5e6f, smile: 0f0e0d0c0b0a`` from a name → hash mapping or (name, hash) pairs."""
    pairs = entries.items() if isinstance(entries, Mapping) else entries
    return ", ".join(f"{escape_name(name)}: {escape_name(str(short))}" for name, short in pairs)


def parse_hashes(value: str) -> dict[str, str]:
    """name → hash from a ``Slider hashes`` value; malformed items are skipped (hashes only advise)."""
    hashes: dict[str, str] = {}
    for raw in _unquote(value).split(","):
        name, sep, short = raw.partition(":")
        if sep and name.strip() and short.strip() and ":" not in short:
            hashes[unescape_name(name)] = unescape_name(short)
    return hashes
