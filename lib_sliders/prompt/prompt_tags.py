"""The ``<slider:…>`` prompt syntax: parse, find, strip and format slider tags.

Grammar (arguments are split on ``:`` exactly as the webui's extra-networks parser does)::

    <slider:NAME[:ALPHA][:k=v]…>

``ALPHA`` is one of

* a number: ``1.5``, ``-2``, ``+0.5``, ``1e-1``;
* a spread ``A..B`` (``-2..2``): spread evenly over the images of the job, image ``i`` of ``n`` gets
  ``A + (B - A) * i / (n - 1)``. A one-image job gets ``A`` (not the midpoint): image 0 always gets
  ``A`` whatever the batch size, so making the job bigger adds images without changing the first one;
* a cycle ``A|B|C``: image ``i`` gets ``values[i % len(values)]``.

A missing or empty ``ALPHA`` (``<slider:age>``, ``<slider:age:start=0.2>``) leaves ``SliderTag.alpha``
None: the caller supplies the default (the file's preferred weight, else 1.0).

Named arguments (any other argument after ``ALPHA`` must be ``k=v``; peers that took extra
positionals broke when the webui changed, see formats-and-peers.md §4):

* ``start=`` / ``stop=``: when the slider is active; a value ≤ 1 is a fraction of the sampling steps,
  a value > 1 an absolute step number (``1`` is therefore the fraction 1, the end), as in loractl;
* ``te=`` / ``unet=``: multipliers for the text-encoder and UNet parts (None = 1).

Names are plain strings taken verbatim from the first argument (stripped); this module never touches
the filesystem. Whitespace around every part is tolerated. Errors are ``TagError``s whose message
starts with the tag text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import SliderError

NETWORK_NAME = "slider"
NAMED_ARGS = ("start", "stop", "te", "unet")

# The webui's ``modules.extra_networks.re_extra_net``. Matching every network and filtering by name
# (rather than a regex for ``<slider:`` only) keeps exactly the webui's idea of where a tag ends,
# e.g. ``<lora:x<slider:a>`` is one (lora) tag to the webui, so it is not a slider tag here either.
RE_EXTRA_NET = re.compile(r"<(\w+):([^>]+)>")

# Strict on purpose: float() would also accept "nan", "inf" and "1_0".
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


class TagError(SliderError):
    """A slider tag that can't be used; the message names the tag text."""

    def __init__(self, tag: str, problem: str):
        self.tag = tag
        self.problem = problem
        super().__init__(f"{tag}: {problem}")


def parse_number(text: str) -> float | None:
    """A finite float from ``text`` (surrounding whitespace allowed), or None if it isn't one."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None  # "1e999" overflows to inf


def format_number(value: float) -> str:
    """Compact text for a number: 2.0 → "2", 0.25 → "0.25", -0.0 → "0".

    Twelve significant digits: computed values such as 0.1 + 0.2 print as "0.3" rather than
    "0.30000000000000004"; anything a person types (≤ 12 digits) round-trips exactly.
    """
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    text = f"{value:.12g}"
    return "0" if text == "-0" else text


@dataclass(frozen=True)
class AlphaSpec:
    """An α: one value, a spread over the job's images, or a cycle through values."""

    kind: str  # "value" | "spread" | "cycle"
    values: tuple[float, ...]

    def __post_init__(self):
        wanted = {"value": 1, "spread": 2}.get(self.kind)
        if self.kind not in ("value", "spread", "cycle"):
            raise ValueError(f"unknown AlphaSpec kind {self.kind!r}")
        if (wanted is not None and len(self.values) != wanted) or not self.values:
            raise ValueError(f"AlphaSpec {self.kind!r} can't have {len(self.values)} values")

    def alpha_for_image(self, index: int, count: int) -> float:
        """α of image ``index`` (0-based) in a job of ``count`` images."""
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"image index {index} is outside a job of {count} image(s)")
        if self.kind == "value":
            return self.values[0]
        if self.kind == "cycle":
            return self.values[index % len(self.values)]
        first, last = self.values
        if count == 1:
            return first  # see the module docstring: image 0 always gets A
        return first + (last - first) * index / (count - 1)

    def __str__(self) -> str:
        sep = {"value": "", "spread": "..", "cycle": "|"}[self.kind]
        return sep.join(format_number(v) for v in self.values)


@dataclass(frozen=True)
class SliderTag:
    """One parsed ``<slider:…>`` tag. None means "not given" (the caller's default applies)."""

    name: str
    alpha: AlphaSpec | None
    start: float | None
    stop: float | None
    te: float | None
    unet: float | None
    text: str  # the original tag, e.g. "<slider:age:-2..2>", for messages

    def alpha_for_image(self, index: int, count: int, default: float = 1.0) -> float:
        """α of image ``index`` of ``count``; ``default`` when the tag gives none."""
        if self.alpha is None:
            return default
        return self.alpha.alpha_for_image(index, count)

    def window(self, total_steps: int) -> tuple[float, float]:
        """(start, stop) as fractions of ``total_steps``; TagError when no step is left.

        Mixed units (``start=5:stop=0.5``) can only be checked here, once the step count is known.
        """
        start = 0.0 if self.start is None else resolve_fraction(self.start, total_steps)
        stop = 1.0 if self.stop is None else resolve_fraction(self.stop, total_steps)
        if stop <= start:
            raise TagError(self.text, f"no sampling step is left between start and stop ({total_steps} steps)")
        return start, stop


def resolve_fraction(value: float, total_steps: int) -> float:
    """A start/stop value as a fraction of the sampling: ≤ 1 is already one, > 1 is a step number."""
    if value > 1:
        if total_steps < 1:
            raise ValueError(f"can't place step {format_number(value)} in {total_steps} steps")
        value = value / total_steps
    return min(max(value, 0.0), 1.0)


def parse_alpha(text: str, tag: str) -> AlphaSpec:
    def number(part: str) -> float:
        value = parse_number(part)
        if value is None:
            raise TagError(tag, f"α '{part.strip()}' is not a number")
        return value

    if "|" in text:
        return AlphaSpec("cycle", tuple(number(part) for part in text.split("|")))
    if ".." in text:
        if "..." in text:  # "1...2" could be 1..0.2 or 1...2: refuse to guess
            raise TagError(tag, f"α '{text}' is ambiguous (write a spread as A..B, e.g. -2..2)")
        first, _, last = text.partition("..")
        return AlphaSpec("spread", (number(first), number(last)))
    return AlphaSpec("value", (number(text),))


def parse_slider_args(items: list[str], text: str) -> SliderTag:
    """A SliderTag from the webui's ``ExtraNetworkParams.items`` (the tag's arguments split on ``:``).

    ``text`` is the whole tag, used in error messages. The name is always ``items[0]``, even if it
    contains ``=``.
    """
    parts = [item.strip() for item in items]
    if not parts or not parts[0]:
        raise TagError(text, "the slider name is empty")
    name, rest = parts[0], parts[1:]
    alpha = None
    if rest and "=" not in rest[0]:
        if rest[0]:  # "<slider:age:>" or "<slider:age::start=0.2>": α omitted
            alpha = parse_alpha(rest[0], text)
        rest = rest[1:]

    named: dict[str, float] = {}
    for part in rest:
        if not part:  # "<slider:age:2:>": a stray ':' is harmless
            continue
        if "=" not in part:
            raise TagError(
                text,
                f"unexpected argument '{part}': α goes right after the name and every other argument "
                f"must be named ({', '.join(k + '=' for k in NAMED_ARGS)})",
            )
        key, _, raw = part.partition("=")
        key = key.strip()
        if key not in NAMED_ARGS:
            raise TagError(text, f"unknown argument '{key}=' (known: {', '.join(k + '=' for k in NAMED_ARGS)})")
        if key in named:
            raise TagError(text, f"'{key}=' is given twice")
        value = parse_number(raw)
        if value is None:
            raise TagError(text, f"{key}= '{raw.strip()}' is not a number")
        if key in ("start", "stop") and value < 0:
            raise TagError(text, f"{key}= must not be negative, got {format_number(value)}")
        named[key] = value

    _check_window(named.get("start"), named.get("stop"), text)
    return SliderTag(name, alpha, named.get("start"), named.get("stop"), named.get("te"), named.get("unet"), text)


def _check_window(start: float | None, stop: float | None, text: str) -> None:
    """Reject stop <= start when both are in the same unit (defaults: start 0, stop 1, fractions)."""
    if start is None and stop is None:
        return
    first = 0.0 if start is None else start
    last = 1.0 if stop is None else stop
    if (first > 1) == (last > 1) and last <= first:
        shown_stop = "the end" if stop is None else format_number(stop)
        raise TagError(text, f"stop ({shown_stop}) must come after start ({format_number(first)})")


def find_slider_tags(prompt: str, network: str = NETWORK_NAME) -> list[SliderTag | TagError]:
    """Every ``<slider:…>`` tag of one prompt, in order, with a TagError in place of each bad one.

    Works on the raw prompt text, so the integration can read every prompt of a batch (the webui's
    ``parse_prompts`` returns only the first prompt's tags). ``AND`` sub-prompts need no special
    handling: like the webui, tags apply to the whole prompt wherever they sit.
    """
    found: list[SliderTag | TagError] = []
    for match in RE_EXTRA_NET.finditer(prompt):
        if match.group(1) != network:
            continue
        try:
            found.append(parse_slider_args(match.group(2).split(":"), match.group(0)))
        except TagError as err:
            found.append(err)
    return found


def format_tag(
    name: str,
    alpha: float | AlphaSpec | None = None,
    start: float | None = None,
    stop: float | None = None,
    te: float | None = None,
    unet: float | None = None,
    network: str = NETWORK_NAME,
) -> str:
    """The tag text for these arguments; the inverse of ``parse_slider_args`` (None = omitted)."""
    if not name or name != name.strip() or ":" in name or ">" in name:
        raise TagError(f"<{network}:{name}>", "a tag's name must be non-empty, unpadded, without ':' or '>'")
    parts = [network, name]
    if alpha is not None:
        parts.append(str(alpha) if isinstance(alpha, AlphaSpec) else format_number(alpha))
    for key, value in zip(NAMED_ARGS, (start, stop, te, unet), strict=True):
        if value is not None:
            parts.append(f"{key}={format_number(value)}")
    return "<" + ":".join(parts) + ">"
