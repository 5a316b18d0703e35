"""Pasted generation parameters whose sliders were renamed or moved on disk since the image was made.

Each name that the library doesn't know is looked up by its ``Slider hashes`` entry; when a slider with
that hash exists under another name, the ``Sliders`` field, the hashes and the ``<slider:…>`` tags in the
prompts are rewritten to that name, so the paste makes the same image again. The built-in Lora does the
same for ``Lora hashes``. Names the library knows are kept as they are.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping

from .infotext import HASHES_KEY, SLIDERS_KEY, format_hashes, format_sliders, parse_hashes, parse_sliders
from .prompt_tags import NETWORK_NAME, RE_EXTRA_NET

PROMPT_KEYS = ("Prompt", "Negative prompt")
_NOT_IN_A_TAG = set(":<>")  # a name with these can't be written back into a tag


def rename_by_hash(params: MutableMapping, is_known: Callable[[str], bool],
                   name_for_hash: Callable[[str], str | None]) -> dict[str, str]:
    """Rewrite ``params`` (the webui's parsed infotext) in place; returns old name → new name."""
    hashes = parse_hashes(str(params.get(HASHES_KEY) or ""))
    renames: dict[str, str] = {}
    for name, short in hashes.items():
        if is_known(name):
            continue
        found = name_for_hash(short)
        if found and found != name:
            renames[name] = found
    if not renames:
        return renames

    if params.get(SLIDERS_KEY) is not None:
        entries, _problems = parse_sliders(str(params[SLIDERS_KEY]))
        params[SLIDERS_KEY] = format_sliders(e._replace(name=renames.get(e.name, e.name)) for e in entries)
    params[HASHES_KEY] = format_hashes({renames.get(name, name): short for name, short in hashes.items()})
    for key in PROMPT_KEYS:
        if isinstance(params.get(key), str):
            params[key] = rename_tags(params[key], renames)
    return renames


def rename_tags(prompt: str, renames: dict[str, str]) -> str:
    """``prompt`` with the name of each ``<slider:NAME…>`` tag in ``renames`` replaced; other text as it was."""

    def replace(match):
        if match.group(1) != NETWORK_NAME:
            return match.group(0)
        name, sep, rest = match.group(2).partition(":")
        new = renames.get(name.strip())
        if new is None or _NOT_IN_A_TAG & set(new):
            return match.group(0)
        return f"<{NETWORK_NAME}:{new}{sep}{rest}>"

    return RE_EXTRA_NET.sub(replace, prompt)
