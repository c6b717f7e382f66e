"""`diagnose_validation`: `validate` with nothing frozen, then one more part frozen per step; the
same pairs in every step, and the step that raises a Spearman most named."""

from __future__ import annotations

import pandas as pd
import pytest
from iv_fixtures import graph_of, hook_count, replacement

from circuit_trace.interventions import (
    FREEZE_PARTS,
    PART_MEANING,
    ValidationDiagnosis,
    ValidationReport,
    diagnose_validation,
    validate,
)


def test_each_step_is_validate_with_one_more_part_frozen():
    rm, graph = replacement("gpt2", "clt"), graph_of("gpt2", "clt")
    diag = diagnose_validation(rm, graph, n_pairs=30, seed=2, max_sources=8, progress=False)
    assert [rep.frozen for rep in diag.reports] == [FREEZE_PARTS[:k] for k in range(len(FREEZE_PARTS) + 1)]
    for k in (0, 2):  # the steps are exactly validate's reports, on one sample of pairs
        alone = validate(rm, graph, n_pairs=30, seed=2, max_sources=8, freeze=FREEZE_PARTS[:k])
        pd.testing.assert_frame_equal(diag.reports[k].pairs, alone.pairs)
    first = diag.reports[0].pairs[["kind", "source", "target"]]
    for rep in diag.reports[1:]:
        pd.testing.assert_frame_equal(rep.pairs[["kind", "source", "target"]], first)
    t = diag.table
    assert list(t.columns) == ["frozen", "ff", "fl", "max_abs_gap"]
    assert t["frozen"].tolist()[0] == "nothing" and t["frozen"].tolist()[-1] == ", ".join(FREEZE_PARTS)
    scale = float(diag.reports[-1].pairs["measured"].abs().max())
    assert t["max_abs_gap"].iloc[-1] < 2e-5 * scale < t["max_abs_gap"].iloc[0]  # exact only when all frozen
    assert t["ff"].iloc[-1] > 0.999 and t["fl"].iloc[-1] > 0.999
    assert diag.prompt == graph.prompt and hook_count(rm.model) == 0


def _report(ff: float, fl: float, frozen: tuple[str, ...]) -> ValidationReport:
    """A report whose Spearman (total) is ff for feature pairs and fl for logit pairs: the measured
    column is the prediction's ranks kept (+1), reversed (-1) or two neighbour pairs swapped (0.8)."""
    order = {1.0: list(range(5)), -1.0: list(range(5))[::-1], 0.8: [0, 2, 1, 4, 3]}
    rows = []
    for kind, rho in (("feature", ff), ("logit", fl)):
        for i, m in enumerate(order[rho]):
            rows.append((kind, f"s{i}", "t", 0.0, float(i), float(m)))
    pairs = pd.DataFrame(rows, columns=["kind", "source", "target", "predicted_direct", "predicted_total", "measured"])
    return ValidationReport("p", pairs, pd.DataFrame(), settings={"freeze": list(frozen)})


def test_largest_step_names_the_part_that_raises_agreement_most():
    values = [(-1.0, -1.0), (0.8, -1.0), (0.8, -1.0), (1.0, 0.8), (1.0, 1.0)]  # ff: norms +1.8; fl: errors +1.8
    diag = ValidationDiagnosis("p", [_report(ff, fl, FREEZE_PARTS[:k]) for k, (ff, fl) in enumerate(values)])
    assert diag.table["ff"].tolist() == pytest.approx([-1.0, 0.8, 0.8, 1.0, 1.0])
    assert diag.largest_step("ff") == ("norms", pytest.approx(1.8))
    assert diag.largest_step("fl") == ("errors", pytest.approx(1.8))
    text = str(diag)
    assert "+ attention" in text and PART_MEANING["norms"] in text and PART_MEANING["errors"] in text
    flat = ValidationDiagnosis("p", [_report(1.0, 1.0, FREEZE_PARTS[:k]) for k in range(3)])
    assert flat.largest_step("ff") is None and "largest rise" not in str(flat)


def test_rounding_noise_around_zero_ranks_as_ties():
    """Pairs predicted exactly 0 and measured as float32 noise (±1e-7 of effects near 1) tie at 0
    instead of ranking in their noise's order; effects above the resolution keep their ranks."""
    predicted = [0.0, 0.0, -4e-8, 0.02, 0.3, 1.5]
    measured = [1.5e-7, -2e-7, 1.5e-7, 0.02, 0.3, 1.5]
    rows = [("logit", f"s{i}", "t", p, p, m) for i, (p, m) in enumerate(zip(predicted, measured))]
    pairs = pd.DataFrame(rows, columns=["kind", "source", "target", "predicted_direct", "predicted_total", "measured"])
    rep = ValidationReport("p", pairs, pd.DataFrame())
    assert rep.summary.iloc[1]["spearman_total"] == pytest.approx(1.0)
    noisy = pairs.assign(measured=[0.2, -0.2, 0.2, 0.02, 0.3, 1.5])  # the same order, now real effects
    assert ValidationReport("p", noisy, pd.DataFrame()).summary.iloc[1]["spearman_total"] < 0.9
