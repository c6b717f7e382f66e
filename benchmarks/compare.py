"""Match our graph (ours.npz) with circuit-tracer's (ref.npz) and report time ratio and edge error.

    python benchmarks/compare.py benchmarks/out/l8-plt [--json cmp.json]

Nodes are matched by key: features (layer, pos, feature), errors (layer, pos), embeddings (pos),
logits (token id). circuit-tracer also has error nodes at position 0 (always zero rows/columns);
they have no counterpart here and are checked to be all-zero. With a feature cap the two tools may
visit different features (their greedy schedules differ); edges are compared on the matched
target rows x matched source columns, which are exact quantities independent of that choice.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def keys(z) -> list[tuple]:
    out = []
    for k, l, p, f, t in zip(z["kind"], z["layer"], z["pos"], z["feature"], z["token_id"]):
        k = str(k)
        out.append(
            ("feature", int(l), int(p), int(f))
            if k == "feature"
            else ("error", int(l), int(p))
            if k == "error"
            else ("embedding", int(p))
            if k == "embedding"
            else ("logit", int(t))
        )
    return out


def timings(case: Path) -> dict:
    """Median attribute seconds of each tool (from case.json / ref.json, where written) and the ratio."""
    res = {}
    for name, f in (("ours", "case.json"), ("ref", "ref.json")):
        p = case / f
        if p.exists():
            j = json.loads(p.read_text())
            res[f"seconds_{name}"] = (j["ours"] if name == "ours" else j)["attribute_median_s"]
    if "seconds_ours" in res and "seconds_ref" in res:
        res["speedup_ref_over_ours"] = res["seconds_ref"] / res["seconds_ours"]
    return res


def compare(case: Path) -> dict:
    if not (case / "ref.npz").exists():  # circuit-tracer timed its runs but its graph was not saved
        return {"case": str(case), "edges": "not compared: no ref.npz", **timings(case)}
    ours, ref = np.load(case / "ours.npz"), np.load(case / "ref.npz")
    ko, kr = keys(ours), keys(ref)
    io = {k: i for i, k in enumerate(ko)}
    ir = {k: i for i, k in enumerate(kr)}
    common = [k for k in ko if k in ir]
    a_o, a_r = ours["adjacency"], ref["adjacency"]
    so = np.asarray([io[k] for k in common])
    sr = np.asarray([ir[k] for k in common])
    # targets: rows that each tool actually computed (features visited + logits)
    rows_o = np.abs(a_o).sum(1) > 0
    rows_r = np.abs(a_r).sum(1) > 0
    tmask = rows_o[so] & rows_r[sr]
    Ao = a_o[np.ix_(so[tmask], so)].astype(np.float64)
    Ar = a_r[np.ix_(sr[tmask], sr)].astype(np.float64)
    diff = np.abs(Ao - Ar)
    scale = max(np.abs(Ao).max(), np.abs(Ar).max(), 1e-30)
    # where is the largest difference?
    r, c = np.unravel_index(int(diff.argmax()), diff.shape)
    tk = [k for k, m in zip(common, tmask) if m]
    # per-kind-pair error
    kinds = np.asarray([k[0] for k in common])
    tkinds = kinds[tmask]
    by_pair = {}
    for tkd in np.unique(tkinds):
        for skd in np.unique(kinds):
            d = diff[np.ix_(tkinds == tkd, kinds == skd)]
            if d.size:
                by_pair[f"{skd}->{tkd}"] = float(d.max() / scale)
    # circuit-tracer-only nodes (position-0 errors) must carry nothing
    only_r = [i for i, k in enumerate(kr) if k not in io]
    only_o = [i for i, k in enumerate(ko) if k not in ir]
    only_r_mass = float(np.abs(a_r[:, only_r]).sum() + np.abs(a_r[only_r]).sum()) if only_r else 0.0
    feat_o = {k for k in ko if k[0] == "feature"}
    feat_r = {k for k in kr if k[0] == "feature"}
    logits_o = [k for k in ko if k[0] == "logit"]
    logits_r = [k for k in kr if k[0] == "logit"]
    res = {
        "case": str(case),
        "same_input_ids": bool(np.array_equal(ours["input_ids"], ref["input_ids"])),
        "nodes_ours": len(ko),
        "nodes_ref": len(kr),
        "matched_nodes": len(common),
        "features_ours": len(feat_o),
        "features_ref": len(feat_r),
        "features_common": len(feat_o & feat_r),
        "logits_ours": [k[1] for k in logits_o],
        "logits_ref": [k[1] for k in logits_r],
        "ref_only_nodes": len(only_r),
        "ref_only_abs_mass": only_r_mass,
        "ours_only_nodes": len(only_o),
        "compared_rows": int(tmask.sum()),
        "compared_edges": int(Ao.size),
        "max_abs_edge": float(scale),
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float(diff.max() / scale),
        "max_diff_at": {
            "target": str(tk[r]),
            "source": str(common[c]),
            "ours": float(Ao[r, c]),
            "ref": float(Ar[r, c]),
        },
        "rel_diff_by_source_to_target": by_pair,
        "nonzero_edges_ours": int(np.count_nonzero(a_o)),
        "nonzero_edges_ref": int(np.count_nonzero(a_r)),
    }
    res |= timings(case)
    res["goal_edges_1e-4"] = res["max_rel_diff"] <= 1e-4
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", nargs="+")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    out = [compare(Path(c)) for c in args.case]
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
