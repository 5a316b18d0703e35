"""Infotext text ↔ dict. Values with ``,`` ``:`` or a newline are written JSON-quoted and unquoted on paste."""

from __future__ import annotations

import json
import re
from collections import namedtuple

PasteField = namedtuple("PasteField", ["component", "target", "api"], defaults=(None,))

re_param = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def quote(text):
    if "," not in str(text) and "\n" not in str(text) and ":" not in str(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text):
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


def parse_generation_parameters(x: str, skip_fields=None) -> dict:
    """``{"Prompt": …, "Negative prompt": …, key: value…}``; the last line holds the ``Key: value`` pairs."""
    lines = x.strip().split("\n")
    params_line = lines.pop() if lines and len(re_param.findall(lines[-1])) >= 3 else ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line.strip())
    res = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in re_param.findall(params_line):
        res[key.strip()] = unquote(value.strip())
    for key in skip_fields or []:
        res.pop(key, None)
    return res
