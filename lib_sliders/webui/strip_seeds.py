"""A strip shows one image at several α: with the setting on, its images share the first image's seed.

The webui gives image i of a job the seed ``seed + i`` (``processing.process_images_inner``) before any script's
``process`` runs, and takes each batch's seeds from ``p.all_seeds`` afterwards, so rewriting that list in
``process`` is enough; each image's infotext then records the seed it was made with.
"""

from __future__ import annotations


def share_first_seed(p) -> bool:
    """Give every image of ``p``'s job the first image's seed; False when the seeds are the user's own choice."""
    if isinstance(getattr(p, "seed", None), list) or getattr(p, "subseed_strength", 0):
        return False  # a list of seeds (API), or variation seeds: those differences are wanted
    seeds = list(getattr(p, "all_seeds", None) or [])
    if len(seeds) < 2:
        return False
    p.all_seeds = [seeds[0]] * len(seeds)
    return True
