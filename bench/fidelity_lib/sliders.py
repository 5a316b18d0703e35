"""The benchmark's sliders on the toy world: what each should move, its training prompts, its prompt edit."""

from __future__ import annotations

from dataclasses import dataclass

from bench.toyworld import world
from lib_sliders.training.config import TextPrompt

SHAPES = list(world.SHAPES)
# Preservation sets the text sliders can train with (--preservation), by the slider's own attribute: concepts
# whose words go with c+ and c− so that the direction learnt is the same whatever they are.
WORDS = {"size": list(world.SIZE_WORDS), "colour": list(world.COLOURS),
         "background": [f"{w} background" for w in world.BACKGROUND_WORDS]}
PRESERVATION = {
    "shapes": lambda own: SHAPES,
    "positions": lambda own: list(world.POSITION_PHRASES.values()),
    "others": lambda own: [w for attribute, words in WORDS.items() if attribute != own for w in words],
    "none": lambda own: [],
}
DEFAULT_TOTAL_GUIDANCE = 6.0  # η = 2 summed over the three shapes: other sets get η = 6 / |P|


@dataclass(frozen=True)
class SliderSpec:
    name: str
    feature: str  # the feature the slider should move
    prompt: TextPrompt | None  # text sliders
    drop: str  # the caption part generation prompts leave out, so the slider decides it
    edit: tuple[str, str]  # prompt editing: the words for the low and the high end


SLIDERS = [
    SliderSpec("size", "size", TextPrompt(target="", positive="huge", negative="tiny", preservation=SHAPES,
                                          guidance=2.0), "size", ("tiny", "huge")),
    SliderSpec("colour", "blueness", TextPrompt(target="", positive="blue", negative="red", preservation=SHAPES,
                                                guidance=2.0), "colour", ("red", "blue")),
    SliderSpec("background", "background", TextPrompt(target="", positive="light background",
                                                      negative="dark background", preservation=SHAPES,
                                                      guidance=2.0), "background", ("dark", "light")),
    SliderSpec("image_size", "size", None, "size", ("tiny", "huge")),
]


def caption_without(attrs: world.Attributes, drop: str | tuple[str, ...], word: str | None = None) -> str:
    """The world's caption with the ``drop`` attributes' words left out (one of them may be replaced by ``word``)."""
    drop = (drop,) if isinstance(drop, str) else drop
    size = world.size_word(attrs.size) if "size" not in drop else word
    colour = attrs.colour if "colour" not in drop else word
    background = world.background_word(attrs.background) if "background" not in drop else word
    thing = " ".join(w for w in (size, colour, attrs.shape) if w)
    where = world.position_phrase(attrs.x, attrs.y)
    return f"a {thing} {where}" + (f" on a {background} background" if background else "")
