"""What a slider may be called: its name is its file stem, so it must be a safe file name on every system.

``name_problem`` says why a name can't be used (the config's validation reports it under ``name``);
``sanitize_name`` makes a safe name from any text, e.g. an imported file's stem.
"""

from __future__ import annotations

MAX_NAME_LENGTH = 100
_NAME_PUNCTUATION = frozenset(" -_.()")
# Device names Windows refuses as file stems, whatever the extension.
_WINDOWS_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"] + [f"com{i}" for i in range(1, 10)] + [f"lpt{i}" for i in range(1, 10)]
)


def name_problem(name: str) -> str | None:
    """Why ``name`` can't be a slider's file stem, or None when it can."""
    if not name.strip():
        return "must not be empty"
    if name != name.strip():
        return "must not start or end with whitespace"
    if "/" in name or "\\" in name:
        return "must not contain path separators"
    bad = sorted({c for c in name if not (c.isalnum() or c in _NAME_PUNCTUATION)})
    if bad:
        return f"may only contain letters, digits, spaces and - _ . ( ); found {''.join(bad)!r}"
    if name.startswith("."):
        return "must not start with '.'"
    if name.endswith("."):
        return "must not end with '.'"  # Windows silently drops it
    if len(name) > MAX_NAME_LENGTH:
        return f"is too long (at most {MAX_NAME_LENGTH} characters)"
    if name.split(".")[0].strip().lower() in _WINDOWS_RESERVED:
        return f"{name!r} is a reserved file name on Windows"
    return None


def sanitize_name(text: str, fallback: str = "slider") -> str:
    """A safe slider name made from ``text`` (e.g. a file stem): unsafe characters become ``_``."""
    name = "".join(c if c.isalnum() or c in _NAME_PUNCTUATION else "_" for c in text.strip())
    name = name.lstrip(".").rstrip(". ")[:MAX_NAME_LENGTH].rstrip(". ")
    if name_problem(name):
        name = f"{name}_" if name and name_problem(f"{name}_") is None else fallback
    return name
