"""Prompts → conditionings, with ``AND`` composition (no prompt editing or emphasis in the double).

Each distinct prompt is encoded by its own call, so two prompts of one batch can have different token
counts (75-token chunks): the cond batch pads them (``stack_conds``); the uncond batch does not, as in the
webui (a batch of negative prompts with different chunk counts fails there too).

``get_multicond_learned_conditioning`` keeps, per image, a list of (sub-prompt conditioning, weight);
``reconstruct_multicond_batch`` turns that into the CFG batch: one row per (image, sub-prompt), in image
order, and ``conds_list[i]`` = [(row, weight), …] of image i. Identical texts are encoded once.
"""

from __future__ import annotations

import re
from collections import namedtuple

import torch


class SdConditioning(list):
    """A list of prompts that also carries the image size (SDXL's conditioner reads it)."""

    def __init__(self, prompts, is_negative_prompt=False, width=None, height=None, copy_from=None):
        super().__init__()
        self.extend(prompts)
        source = prompts if copy_from is None else copy_from
        self.is_negative_prompt = is_negative_prompt or getattr(source, "is_negative_prompt", False)
        self.width = width or getattr(source, "width", None)
        self.height = height or getattr(source, "height", None)


re_AND = re.compile(r"\bAND\b")
re_weight = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def get_multicond_prompt_list(prompts):
    """(per prompt [(flat index, weight)…], the distinct sub-prompt texts, text → flat index)."""
    res_indexes = []
    prompt_indexes = {}
    prompt_flat_list = SdConditioning(prompts)
    prompt_flat_list.clear()
    for prompt in prompts:
        indexes = []
        for subprompt in re_AND.split(prompt):
            match = re_weight.search(subprompt)
            text, weight = match.groups() if match is not None else (subprompt, 1.0)
            weight = 1.0 if weight is None else float(weight)
            if text not in prompt_indexes:
                prompt_indexes[text] = len(prompt_flat_list)
                prompt_flat_list.append(text)
            indexes.append((prompt_indexes[text], weight))
        res_indexes.append(indexes)
    return res_indexes, prompt_flat_list, prompt_indexes


ScheduledPromptConditioning = namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])


class ComposableScheduledPromptConditioning:
    def __init__(self, schedules, weight=1.0):
        self.schedules = schedules
        self.weight = weight


class MulticondLearnedConditioning:
    def __init__(self, shape, batch):
        self.shape = shape
        self.batch = batch


def get_learned_conditioning(model, prompts, steps, hires_steps=None, use_old_scheduling=False):
    """One schedule (a single entry here) per prompt; each distinct prompt is encoded by its own call."""
    res, cache = [], {}
    for prompt in prompts:
        if prompt not in cache:
            cond = model.get_learned_conditioning(SdConditioning([prompt], copy_from=prompts))
            cache[prompt] = [ScheduledPromptConditioning(steps, cond[0])]
        res.append(cache[prompt])
    return res


def get_multicond_learned_conditioning(model, prompts, steps, hires_steps=None, use_old_scheduling=False):
    res_indexes, prompt_flat_list, _ = get_multicond_prompt_list(prompts)
    learned = get_learned_conditioning(model, prompt_flat_list, steps, hires_steps, use_old_scheduling)
    batch = [[ComposableScheduledPromptConditioning(learned[i], weight) for i, weight in indexes]
             for indexes in res_indexes]
    return MulticondLearnedConditioning(shape=(len(prompts),), batch=batch)


def _at_step(schedules, step):
    return next((s.cond for s in schedules if step <= s.end_at_step), schedules[-1].cond)


def reconstruct_cond_batch(c, current_step):
    return torch.stack([_at_step(schedules, current_step) for schedules in c])


def reconstruct_multicond_batch(c: MulticondLearnedConditioning, current_step):
    rows, conds_list = [], []
    for composable_prompts in c.batch:
        image = []
        for composable in composable_prompts:
            image.append((len(rows), composable.weight))
            rows.append(_at_step(composable.schedules, current_step))
        conds_list.append(image)
    return conds_list, stack_conds(rows)


def stack_conds(tensors):
    """Rows of different token counts (sub-prompts with more 75-token chunks than others) are padded with
    their last vector to the longest, as the webui does."""
    tokens = max(t.shape[0] for t in tensors)
    return torch.stack([torch.vstack([t, t[-1:].repeat(tokens - t.shape[0], 1)]) for t in tensors])
