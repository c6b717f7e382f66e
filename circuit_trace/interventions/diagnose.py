"""Why a graph's predictions miss the real model's ablations: `validate` run again and again, each
time with one more nonlinearity of the real model frozen at the clean prompt's values (the parts of
`frozen.FREEZE_PARTS`, in order), so the step that raises the agreement most names the part the
graph misses most. With every part frozen the real model is linear in every feature, as the graph
assumes: what is left then is the graph's own cut (features it leaves out)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..replacement.model import ReplacementModel
from .frozen import FREEZE_PARTS
from .validate import ValidationReport, validate_each

__all__ = ["PART_MEANING", "ValidationDiagnosis", "diagnose_validation"]

# What a large rise at each step says about the real model, in a user's words.
PART_MEANING = {
    "norms": "removing a feature rescales its whole position (a few features dominate the residual there)",
    "attention": "ablations move attention patterns, which the graph holds fixed",
    "errors": "the MLPs answer an ablation unlike their transcoder (its error is not a constant)",
    "choice": "features turn on or off under an ablation (the graph treats active ones as linear)",
}
KINDS = {"feature->feature": "ff", "feature->logit": "fl"}


@dataclass
class ValidationDiagnosis:
    """One `ValidationReport` per step: nothing frozen, then `FREEZE_PARTS[:1]`, `[:2]`, ... The
    same sources and pairs in every step (same seed), so the steps differ only in what is frozen."""

    prompt: str
    reports: list[ValidationReport]

    @property
    def table(self) -> pd.DataFrame:
        """One row per step: what is frozen, Spearman (total) of each pair kind, and the largest
        |predicted - measured| over all pairs (about 1e-6 once everything is frozen)."""
        rows = []
        for rep in self.reports:
            s = rep.summary.set_index("pairs")["spearman_total"]
            gap = (rep.pairs["predicted_total"] - rep.pairs["measured"]).abs().max()
            row = {"frozen": ", ".join(rep.frozen) or "nothing"}
            row |= {short: float(s[kind]) for kind, short in KINDS.items()}
            rows.append(row | {"max_abs_gap": float(gap)})
        return pd.DataFrame(rows)

    def largest_step(self, kind: str = "ff") -> tuple[str, float] | None:
        """(part, rise) of the step that raises `kind` ("ff" or "fl") most; None if none rises."""
        values = self.table[kind].to_numpy()
        rises = np.diff(values)
        if len(rises) == 0 or np.all(np.isnan(rises)) or np.nanmax(rises) <= 0:
            return None
        k = int(np.nanargmax(rises))
        return FREEZE_PARTS[k], float(rises[k])

    def __str__(self) -> str:
        t = self.table
        lines = [f"why the graph of {self.prompt!r} misses the real model, part by part"]
        lines.append(f"  {'frozen in the real model':<38}{'ff':>7}{'fl':>7}  {'max |pred - meas|':>17}")
        for k, r in enumerate(t.to_dict("records")):
            name = "nothing" if k == 0 else f"+ {FREEZE_PARTS[k - 1]}"
            lines.append(f"  {name:<38}{r['ff']:>7.3f}{r['fl']:>7.3f}  {r['max_abs_gap']:>17.3g}")
        for kind, label in (("ff", "feature->feature"), ("fl", "feature->logit")):
            step = self.largest_step(kind)
            if step is not None:
                part, rise = step
                lines.append(
                    f"{label}: the largest rise (+{rise:.2f}) comes from freezing {part}: {PART_MEANING[part]}"
                )
        return "\n".join(lines)


def diagnose_validation(
    model: ReplacementModel,
    graph,
    *,
    n_pairs: int = 200,
    seed: int = 0,
    max_sources: int = 64,
    progress: bool = True,
) -> ValidationDiagnosis:
    """`validate(model, graph, ...)` with nothing frozen, then with each part of `FREEZE_PARTS` frozen
    in turn on top of the previous ones: len(FREEZE_PARTS) + 1 validations of the same pairs."""
    freezes = [FREEZE_PARTS[:k] for k in range(len(FREEZE_PARTS) + 1)]
    reports = validate_each(
        model, graph, freezes, n_pairs=n_pairs, seed=seed, max_sources=max_sources, progress=progress
    )
    return ValidationDiagnosis(prompt=graph.prompt, reports=reports)
