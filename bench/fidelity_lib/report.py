"""The benchmark's printed tables and its verdicts against the issue's targets."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.fidelity_lib.measure import FEATURES
from bench.fidelity_lib.sliders import SLIDERS


def fmt(value: float, digits: int = 3) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


@dataclass(frozen=True)
class Composed:
    """One text slider's slope on its own feature alone and among the others."""

    name: str
    start: float
    together: float  # all sliders at the same α
    alone: float
    others_alone: float  # the other sliders' slopes on this feature, each alone
    others_held: float  # this slider varied, the others held at a fixed non-zero α per seed

    def ratio(self, slope: float) -> float:
        return slope / self.alone if np.isfinite(self.alone) and self.alone != 0 else math.nan


def matched_alpha(matched: dict) -> str:
    if "alpha" not in matched:
        return "–"
    return f"{matched['alpha']:.2f}" if matched["reached"] else f">{matched['alpha']:g}"


def print_report(rows, composition, alphas, match: str = "interpolate") -> None:
    header = (f"{'slider':<11}{'method':<17}{'found':>6}{'slope/α':>9}{'ρ means':>9}{'ρ pooled':>9}"
              f"{'α@m':>6}{'effect@m':>10}{'interf@m':>10}{'shape@m':>9}{'struct@m':>10}{'interf@max':>11}"
              f"{'struct@max':>11}"
              f"{'score cos':>10}{'score gain':>11}")
    print("\n" + header + "\n" + "-" * len(header))
    for name, label, effect, matched, top, score in rows:
        print(f"{name:<11}{label:<17}{fmt(effect['found'], 2):>6}{fmt(effect['slope']):>9}{fmt(effect['rho_means']):>9}"
              f"{fmt(effect['rho_pooled']):>9}{matched_alpha(matched):>6}{fmt(matched['effect']):>10}"
              f"{fmt(matched['interference']):>10}"
              f"{fmt(matched['shape_change'], 2):>9}{fmt(matched['structure']):>10}{fmt(top['interference']):>11}"
              f"{fmt(top['structure']):>11}{fmt(score.cosine if score else math.nan):>10}"
              f"{fmt(score.gain if score else math.nan):>11}")
    how = (f"interpolated in α between the two α that bracket it; '>{max(alphas):g}': never reached, given at the "
           "largest α"
           if match == "interpolate" else "at the α of the grid whose mean effect is nearest")
    print("slope/α: change of the target feature per unit α, over its range; @m: at matched effect, where the mean "
          f"effect reaches the prompt edit's ({how}) (prompt edit: no word → high word; its slope column is that "
          "edit's effect; oracle: a render → the same render with the high word's value); "
          f"@max: at |α| = {max(abs(alphas)):g}; "
          "interference: mean |change| of the other features over their ranges; shape: rate of shape changes; "
          "struct: RMS pixel change from α = 0. LPIPS: not available offline.")
    print("\ninterference by feature @m (mean |change| over the feature's range; the slider's own feature in brackets)")
    print(f"{'slider':<11}{'method':<17}" + "".join(f"{f:>12}" for f in FEATURES))
    for name, label, _, matched, _, _ in rows:
        target = next(s.feature for s in SLIDERS if s.name == name)
        cells = [(f"[{fmt(matched['by_feature'][f])}]" if f == target else fmt(matched["by_feature"][f]))
                 for f in FEATURES]
        print(f"{name:<11}{label:<17}" + "".join(f"{c:>12}" for c in cells))
    ratios = {}
    if composition:
        print("\ncomposition (the text sliders at once, each from its start; slopes of the slider's own feature)")
        print(f"  {'slider':<11}{'alone':>8}{'together':>10}{'ratio':>7}{'alone + others alone':>22}"
              f"{'others held':>13}{'ratio':>7}")
        for c in composition:
            ratio, held = c.ratio(c.together), c.ratio(c.others_held)
            ratios[ours_label(c.start)] = ratios.get(ours_label(c.start), {}) | {c.name: ratio}
            print(f"  {c.name:<11}{fmt(c.alone):>8}{fmt(c.together):>10}{fmt(ratio, 2):>7}"
                  f"{fmt(c.alone + c.others_alone):>22}{fmt(c.others_held):>13}{fmt(held, 2):>7}"
                  + (f"  (start {c.start:g})" if c.start else ""))
        print("together: all at the same α; alone + others alone: what together would be if the sliders' effects on "
              "this feature just added up; others held: this slider over the grid with the others at a non-zero α "
              "per seed, fixed across the grid (its own effect among the others, without what they add)")
    print("\ntargets (ours, and ours with the slider start): ρ ≥ 0.95; interference ≤ 1/3 and structure ≤ 1/2 of "
          "prompt editing's (the word in the prompt throughout) at matched effect; composition within 20 %")
    edits = {name: matched for name, label, _, matched, _, _ in rows if label == "prompt edit"}
    for name, label, effect, ours, _, _ in rows:
        if not label.startswith("ours") or name not in edits:
            continue
        checks = {"ρ": at_least(effect["rho_means"], 0.95),
                  "interference": fraction_of(ours["interference"], edits[name]["interference"], 1 / 3),
                  "structure": fraction_of(ours["structure"], edits[name]["structure"], 1 / 2)}
        if name in ratios.get(label, {}):
            checks["composition"] = at_least(-abs(ratios[label][name] - 1), -0.2)
        print(f"  {name:<11}{label:<17}" + ", ".join(f"{k} {verdict}" for k, verdict in checks.items()))
    floors = {name: matched for name, label, _, matched, _, _ in rows if label == "oracle @m"}
    for name, floor in floors.items():
        if name in edits and np.isfinite(floor["structure"]) and edits[name]["structure"] > 0:
            share = floor["structure"] / edits[name]["structure"]
            print(f"  {name:<11}structure floor: a perfect edit of the same effect (oracle @m) changes {share:.2f}× "
                  f"the prompt edit's pixels" + (" — the ≤ 1/2 target is below it" if share > 0.5 else ""))


def ours_label(start: float) -> str:
    return "ours" + (f" s{start:g}" if start else "")


def at_least(value: float, bound: float) -> str:
    return "not measured" if not np.isfinite(value) else "met" if value >= bound else "NOT met"


def fraction_of(ours: float, edit: float, share: float) -> str:
    """'met' when ``ours`` ≤ share × the edit's; a prompt edit that changes nothing leaves nothing to compare with
    (a random model's, whose images have no shape to measure)."""
    if not (np.isfinite(ours) and np.isfinite(edit)) or edit <= 0:
        return "not measured (the prompt edit changes nothing)"
    return "met" if ours <= share * edit else "NOT met"
