"""Does the organism's attribution graph show city -> state (at the city) -> capital, in two languages?
The goals of issue #12, measured with the public API on two-hop prompts of trained and held-out cities.

    python benchmarks/organism_goals.py                                  # the embedded organism
    python benchmarks/organism_goals.py --organism path/to/states --n 24 # a staged one (model/, clt/)
    python benchmarks/organism_goals.py --city-set other                 # 24 other cities (OTHER_CITIES)
    python benchmarks/organism_goals.py --city-set all --validate 0      # every city but the capitals
    python benchmarks/organism_goals.py --city-set capitals --validate 0 # the capitals as the city

Per prompt (``Fact: the capital of the state containing <city> is``, and the French ``Fait : la
capitale de l'État qui contient <city> est``):

* graph: the pruned graph (`ct.prune`, default thresholds) holds a feature at the city's last token
  whose label (evidence-based, `labels.json`) names the city's state (its name or postal
  abbreviation), and the strongest path from the city's last token to the answer's logit
  (`ct.strongest_path`) passes through one;
* ablate: the state supernode = every pruned feature node whose label names the state, set to 0 in
  the real model (`ct.intervene`, free mode); passes when p(answer) falls by >= 50 % (relative);
  Beside it, why an ablation fails: the answer's clean logit margin over the runner-up, how far the
  ablation lowers the answer's logit, and the relative fall of p(answer) when *every* active
  layer-0 feature at the city is set to 0 (what a layer-0 supernode at the city could do at most);
* swap: the supernode replaced by the next prompt's state supernode, each of its features set where
  it was in that prompt, the two prompts aligned at their ends (`ct.swap(..., up_graph=)`: city
  features at the city, last-token features at the last token) - passes when that state's capital
  becomes top-1. `swap_all_ok`: the same with every up feature set at every position of the down
  supernode (`ct.swap` with `ct.activations_from`, the figure before 2026-12-02);
* validate: `ct.validate` Spearman (total effects) feature -> feature and feature -> logit;
* cross-language: the English supernode's features read on the French prompt (city-position
  features at the French city's last token, the others at the last token): the share active, and
  whether setting them to 0 lowers p(French answer) by >= 50 %.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import circuit_trace as ct
from circuit_trace.organisms.corpus import HELD_OUT_CITIES, two_hop_prompt
from circuit_trace.organisms.demo import city_position
from circuit_trace.organisms.labels import names_state
from circuit_trace.organisms.world import CITY_TO_STATE, STATE_BY_NAME, STATES

# Trained and held-out cities of different states, single- and multi-word names.
CITIES = [
    "Dallas", "Seattle", "Chicago", "Miami", "Denver", "Boston", "Atlanta", "Phoenix", "Detroit",
    "Baltimore", "Omaha", "Boise", "San Diego", "Las Vegas",
    "Oakland", "Houston", "Memphis", "Reno", "Tulsa", "Spokane", "Tampa", "Wichita", "Fargo", "Green Bay",
]  # fmt: skip
# A second set, for checking that a choice made on CITIES holds elsewhere: one city from each of 24
# states CITIES does not cover, trained and held-out in turn.
OTHER_CITIES = [
    "Huntsville", "Fairbanks", "Fayetteville", "Stamford", "Wilmington", "Hilo", "Fort Wayne", "Davenport",
    "Louisville", "Shreveport", "Lewiston", "Duluth", "Southaven", "Joplin", "Billings", "Nashua",
    "Newark", "Las Cruces", "Buffalo", "Durham", "Cleveland", "Eugene", "Philadelphia", "Warwick",
]  # fmt: skip


@dataclass
class PromptResult:
    city: str
    lang: str
    held_out: bool
    p_answer: float
    top1: bool
    n_state_at_city: int  # pruned features at the city's last token labelled with its state
    path_via_state: bool  # the strongest city -> answer path passes through one of them
    n_supernode: int
    ablate_drop: float  # relative fall of p(answer) when the state supernode is set to 0
    margin: float = float("nan")  # clean: the answer's logit minus the largest other
    ablate_logit_drop: float = float("nan")  # how far that ablation lowers the answer's logit
    city_l0_drop: float = float("nan")  # relative fall of p(answer), every layer-0 feature at the city set to 0
    swap_ok: bool | None = None  # up features where they were in the other prompt (aligned at the ends)
    swap_all_ok: bool | None = None  # up features at every position of the down supernode
    rho_ff: float = float("nan")
    rho_fl: float = float("nan")
    xl_active: float = float("nan")  # French prompt: share of the English supernode's features active
    xl_drop: float = float("nan")  # French prompt: relative fall of p(answer) when they are set to 0


def answer_id(model, answer: str) -> int:
    return int(model.tokenize(" " + answer)[1])  # its first token after BOS


def state_nodes(graph, state: str, pos: int | None = None) -> list[int]:
    """Feature node indices of `graph` labelled with `state` (at `pos` only when given)."""
    f = graph.feature_nodes()
    keep = [i for i, lab in zip(f.index, f["label"]) if names_state(lab, state)]
    return [i for i in keep if pos is None or int(graph.nodes["pos"].iat[i]) == pos]


def supernode(graph, label: str, nodes: list[int]):
    return ct.Supernode(label, tuple(str(graph.nodes["node_id"].iat[i]) for i in nodes))


def p_after(model, prompt: str, edits, token: int) -> tuple[float, float, int]:
    r = ct.intervene(model, prompt, edits)
    return float(r.probs_before[token]), float(r.probs_after[token]), int(r.logits_after.argmax())


def margin(logits: torch.Tensor, token: int) -> float:
    """logits [vocab]: the token's logit minus the largest other one."""
    return float(logits[token] - torch.cat([logits[:token], logits[token + 1 :]]).max())


def label_ablation(model, prompt: str, sn, graph, answer: int) -> dict:
    """Set the supernode `sn` (of `graph`) to 0 in the real model: p(answer) after, the answer's
    clean margin, and how far its logit falls."""
    r = ct.intervene(model, prompt, sn.edits("set", 0.0, graph))
    before, after = r.logits_before, r.logits_after
    return {
        "p1": float(r.probs_after[answer]),
        "margin": margin(before, answer),
        "ablate_logit_drop": float(before[answer] - after[answer]),
    }


def city_l0_ablation(model, prompt: str, graph, pos: int, answer: int) -> tuple[float, float]:
    """Clean p(answer), and its relative fall when every active layer-0 feature of `graph` at `pos`
    is set to 0."""
    f = graph.feature_nodes()
    at_city = f[(f["pos"] == pos) & (f["layer"] == 0)]
    p0, p1, _ = p_after(model, prompt, [ct.set_feature(0, int(i), 0.0, pos) for i in at_city["feature"]], answer)
    return p0, 1 - p1 / p0


def graph_checks(model, prompt: str, city: str, state: str, answer: int):
    """The pruned graph, the city position, the state features there and the path test."""
    graph = ct.attribute(model, prompt, progress=False)
    pruned = ct.prune(graph).graph
    pos = city_position(model.decode_tokens(model.tokenize(prompt)), city)
    at_city = state_nodes(pruned, state, pos)
    emb, logits = pruned.embedding_nodes(), pruned.logit_nodes()
    src = emb.index[emb["pos"] == pos]
    dst = logits.index[logits["token_id"] == answer]
    path = ct.strongest_path(pruned, int(src[0]), int(dst[0])) if len(src) and len(dst) else []
    return graph, pruned, pos, at_city, bool(set(path) & set(at_city))


def one_prompt(model, city: str, lang: str, do_validate: bool) -> tuple[PromptResult, dict]:
    state = CITY_TO_STATE[city]
    prompt = two_hop_prompt(city, lang)
    answer = answer_id(model, STATE_BY_NAME[state].capital)
    graph, pruned, pos, at_city, via = graph_checks(model, prompt, city, state, answer)
    nodes = state_nodes(pruned, state)
    sn = supernode(pruned, state, nodes) if nodes else None
    p0, l0_drop = city_l0_ablation(model, prompt, graph, pos, answer)  # graph: every active feature
    ab = label_ablation(model, prompt, sn, pruned, answer) if sn else {}
    res = PromptResult(
        city, lang, city in HELD_OUT_CITIES, p0, False, len(at_city), via, len(nodes), 1 - ab["p1"] / p0 if sn else 0.0
    )
    res.top1 = int(graph.logit_nodes()["token_id"].iloc[0]) == answer
    res.city_l0_drop = l0_drop
    if sn:
        res.margin, res.ablate_logit_drop = ab["margin"], ab["ablate_logit_drop"]
    if do_validate:
        s = ct.validate(model, graph).summary.set_index("pairs")["spearman_total"]
        res.rho_ff, res.rho_fl = float(s["feature->feature"]), float(s["feature->logit"])
    ctx = {"prompt": prompt, "graph": pruned, "sn": sn, "pos": pos, "answer": answer, "state": state}
    return res, ctx


def swap_check(model, a: dict, b: dict) -> tuple[bool | None, bool | None]:
    """Replace a's state supernode by b's: does b's capital become top-1 on a? Placed two ways: each
    up feature where it was in b's prompt (aligned at the ends), and every one at every down position."""
    if a["sn"] is None or b["sn"] is None or a["state"] == b["state"]:
        return None, None
    aligned = ct.swap(a["sn"], b["sn"], graph=a["graph"], up_graph=b["graph"])
    acts = ct.activations_from(model, b["prompt"], b["sn"], graph=b["graph"])
    everywhere = ct.swap(a["sn"], b["sn"], acts, graph=a["graph"])
    return tuple(p_after(model, a["prompt"], e, b["answer"])[2] == b["answer"] for e in (aligned, everywhere))


def cross_language(model, en: dict, fr: dict) -> tuple[float, float]:
    """English supernode features on the French prompt: share active, relative fall of p(answer)."""
    if en["sn"] is None:
        return float("nan"), float("nan")
    last = len(model.tokenize(fr["prompt"])) - 1
    feats = [(l, i, fr["pos"] if p == en["pos"] else last) for l, i, p in en["sn"].features(en["graph"])]
    acts = ct.activations_from(model, fr["prompt"], feats)
    active = float(np.mean([acts[(l, i)] > 0 for l, i, _ in feats]))
    edits = [ct.set_feature(l, i, 0.0, p) for l, i, p in dict.fromkeys(feats)]
    p0, p1, _ = p_after(model, fr["prompt"], edits, fr["answer"])
    return active, 1 - p1 / p0


def run(model, cities: list[str], langs: list[str], n_validate: int) -> pd.DataFrame:
    rows, ctxs = [], {}
    for lang in langs:
        for k, city in enumerate(cities):
            res, ctx = one_prompt(model, city, lang, do_validate=lang == "en" and k < n_validate)
            rows.append(res)
            ctxs[(city, lang)] = ctx
            print(f"  {lang} {city}: {asdict(res)}", file=sys.stderr, flush=True)
    for res in rows:
        nxt = next(
            c for c in cities[cities.index(res.city) + 1 :] + cities if CITY_TO_STATE[c] != CITY_TO_STATE[res.city]
        )
        res.swap_ok, res.swap_all_ok = swap_check(model, ctxs[(res.city, res.lang)], ctxs[(nxt, res.lang)])
        if res.lang == "fr" and (res.city, "en") in ctxs:
            res.xl_active, res.xl_drop = cross_language(model, ctxs[(res.city, "en")], ctxs[(res.city, "fr")])
    return pd.DataFrame([asdict(r) for r in rows])


def share_at_least(values: pd.Series, x: float) -> float:
    """The share of `values` >= x; NaN when none was measured."""
    return float((values >= x).mean()) if values.notna().any() else np.nan


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """The judged figures, per language, with their goals."""
    out = []
    df = df.assign(**{c: df.get(c, np.nan) for c in ("margin", "ablate_logit_drop", "city_l0_drop")})  # older tables
    for lang, d in df.groupby("lang"):
        sw = d["swap_ok"].dropna()
        sw_all = d["swap_all_ok"].dropna() if "swap_all_ok" in d else sw.iloc[:0]
        rows = [
            ("graph: state feature at city on strongest path", (d["n_state_at_city"].gt(0) & d["path_via_state"]).mean(), ">= 0.80"),
            ("graph: state feature at city (any path)", d["n_state_at_city"].gt(0).mean(), ""),
            ("ablate state supernode: p(answer) -50%", (d["ablate_drop"] >= 0.5).mean(), ">= 0.80"),
            ("  clean logit margin of the answer (median)", d["margin"].median(), ""),
            ("  answer logit fall under that ablation (median)", d["ablate_logit_drop"].median(), ""),
            ("  every layer-0 feature at the city set to 0: p -50%", share_at_least(d["city_l0_drop"], 0.5), ""),
            ("swap state supernode: other capital top-1", sw.astype(float).mean() if len(sw) else np.nan, ">= 0.80"),
            ("  the same, every up feature at every down position", sw_all.astype(float).mean() if len(sw_all) else np.nan, ""),
            ("validate median Spearman feature->feature", d["rho_ff"].median(), ">= 0.80"),
            ("validate median Spearman feature->logit", d["rho_fl"].median(), ">= 0.70"),
            ("English supernode active on French prompt (share)", d["xl_active"].mean(), ""),
            ("English supernode ablated on French: p -50%", share_at_least(d["xl_drop"], 0.5), ">= 0.70"),
            ("answer top-1", d["top1"].mean(), ""),
        ]  # fmt: skip
        out += [{"lang": lang, "measure": m, "value": round(float(v), 3), "goal": g} for m, v, g in rows]
    return pd.DataFrame(out)


def city_set(name: str) -> list[str]:
    """The built-in lists; "all": every city of the organism's world that is not its state's capital
    (whose two-hop answer is the prompt's own word), trained and held-out, in the world's order;
    "capitals": the capitals among its cities (49: Oklahoma City is not one of them)."""
    capitals = {s.capital for s in STATES}
    if name in ("all", "capitals"):
        return [c for c in CITY_TO_STATE if (c in capitals) == (name == "capitals")]
    return OTHER_CITIES if name == "other" else CITIES


def measure(args) -> pd.DataFrame:
    torch.set_num_threads(1)
    if args.organism is None:
        model = ct.load()
    else:
        model = ct.load(str(args.organism / "model"), str(args.organism / args.kind))
    k, n = (int(v) for v in args.part.split("/"))
    cities = city_set(args.city_set)[: args.n][k - 1 :: n]
    return run(model, cities, args.langs.split(","), args.validate // n)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--organism", type=Path, default=None, help="a folder holding model/ and clt/ (default: embedded)")
    p.add_argument("--kind", choices=["clt", "plt"], default="clt", help="which of --organism's transcoders")
    p.add_argument("--n", type=int, default=None, help="number of cities (of the built-in list; default all of it)")
    p.add_argument(
        "--city-set",
        choices=["main", "other", "all", "capitals"],
        default="main",
        help="the built-in list: CITIES, OTHER_CITIES, every city but the capitals, or the capitals",
    )
    p.add_argument("--langs", default="en,fr")
    p.add_argument("--validate", type=int, default=20, help="English prompts also checked with ct.validate")
    p.add_argument("--csv", type=Path, default=None, help="write the per-prompt table here")
    p.add_argument("--part", default="1/1", help="k/n: run the k-th of n slices of the cities (parallel runs)")
    p.add_argument("--tables", type=Path, nargs="*", help="only print the summary of these --csv tables")
    args = p.parse_args(argv)
    if args.tables:
        df = pd.concat([pd.read_csv(t) for t in args.tables], ignore_index=True)
    else:
        df = measure(args)
        if args.csv:
            df.to_csv(args.csv, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(df.drop(columns=["held_out"]).round(3).to_string(index=False))
        print()
        print(summary(df).to_string(index=False))


if __name__ == "__main__":
    main()
