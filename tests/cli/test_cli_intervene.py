"""`circuit-trace intervene`'s edit and generation options: each one prints what the Python API
computes for the same edits (the CLI adds no arithmetic of its own), and bad or conflicting options
are one error line with exit code 2, said before the model loads."""

from __future__ import annotations

import json
from urllib.parse import quote

import helpers
import pytest

import circuit_trace as ct
from circuit_trace.cli import EXIT_INPUT, EXIT_OK, main

PROMPT, OTHER = "w1 w5 w7 w9", "w2 w6 w3 w8"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-intervene")
    helpers.save_llama_and_clt(root)
    return root


@pytest.fixture(scope="module")
def rm(saved):
    return ct.load(str(saved / "model"), str(saved / "clt"), device="cpu")


def run(saved, capsys, *args, prompt=PROMPT):
    code = main(["intervene", prompt, "--model", str(saved / "model"), "--transcoders", str(saved / "clt"), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error(err: str) -> str:
    """The one error line, the last thing said (a model load may print a progress bar before it)."""
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err and err.rstrip().endswith(lines[0]), err
    return lines[0]


_ACTIVE: dict[str, list[tuple[int, int]]] = {}


def active(rm, prompt=PROMPT) -> list[tuple[int, int]]:
    """(layer, index) of the 2 strongest features at the last position: edits that change something."""
    if prompt not in _ACTIVE:
        f = ct.attribute(rm, prompt, progress=False).feature_nodes()
        layer, index, pos, act = (f[c].to_numpy() for c in ("layer", "feature", "pos", "activation"))
        order = [k for k in act.argsort()[::-1] if pos[k] == pos.max()][:2]  # the two strongest there
        _ACTIVE[prompt] = [(int(layer[k]), int(index[k])) for k in order]
    return _ACTIVE[prompt]


def test_add_prints_what_the_api_computes(saved, rm, capsys):
    (l, i), _ = active(rm)
    code, out, _ = run(saved, capsys, "--add", f"{l}_{i}=-3")
    assert code == EXIT_OK
    expected = ct.intervene(rm, PROMPT, [ct.add_feature(l, i, -3.0)])
    assert str(expected) in out
    assert f"{l}_{i}@4 'w9': add -3" in out and expected.kl > 0


@pytest.mark.parametrize("spec, layers", [(None, None), ("0,2", [0, 2])])
def test_ablate_errors(saved, rm, capsys, spec, layers):
    code, out, _ = run(saved, capsys, "--ablate-errors", *([spec] if spec else []))
    assert code == EXIT_OK
    expected = ct.intervene(rm, PROMPT, [ct.ablate_errors(layers)])
    assert expected.kl > 0 and str(expected) in out


def test_swap_sets_up_to_the_other_prompts_activations(saved, rm, capsys):
    (dl, di), _ = active(rm, PROMPT)
    (ul, ui), _ = active(rm, OTHER)
    down, up = f"{dl}_{di}_4", f"{ul}_{ui}_4"
    code, out, _ = run(
        saved,
        capsys,
        "--supernode",
        f"down={down}",
        "--supernode",
        f"up={up}",
        "--swap",
        "down=up",
        "--swap-from",
        OTHER,
    )
    assert code == EXIT_OK
    acts = ct.activations_from(rm, OTHER, ct.Supernode("up", (up,)))
    expected = ct.intervene(rm, PROMPT, ct.swap(ct.Supernode("down", (down,)), ct.Supernode("up", (up,)), acts))
    assert str(expected) in out
    assert "'down'" in out and "(0%)" in out  # the down supernode's activation fraction after the swap


def test_swap_places_up_where_it_was_in_the_other_prompt(saved, rm, capsys):
    """UP's nodes at two positions of a longer --swap-from prompt land at the matching positions here
    (prompts aligned at their ends); --swap-at-down puts both at DOWN's position instead."""
    longer = OTHER + " w4"
    f = ct.attribute(rm, longer, progress=False).feature_nodes()
    last = int(f.pos.max())
    up_ids = [f.node_id[f.pos == p].iloc[0] for p in (last - 1, last)]
    (dl, di), _ = active(rm, PROMPT)
    down, up = ct.Supernode("down", (f"{dl}_{di}_4",)), ct.Supernode("up", tuple(up_ids))
    args = ["--supernode", f"down={down.node_ids[0]}", "--supernode", f"up={','.join(up_ids)}"]
    args += ["--swap", "down=up", "--swap-from", longer]
    aligned = ct.swap_from(rm, PROMPT, down, up, longer)
    assert sorted(p for e in aligned[1:] for p in e.positions) == [3, 4]
    code, out, _ = run(saved, capsys, *args)
    assert code == EXIT_OK and str(ct.intervene(rm, PROMPT, aligned)) in out
    assert "'up'" in out  # its activation here, at the positions the swap set it at
    at_down = ct.swap(down, up, ct.activations_from(rm, longer, up))
    assert all(e.positions == (4,) for e in at_down)
    code, out, _ = run(saved, capsys, *args, "--swap-at-down")
    assert code == EXIT_OK and str(ct.intervene(rm, PROMPT, at_down)) in out and "'up'" not in out


def test_supernodes_from_a_graph_json_and_a_url_equal_supernode_options(saved, rm, tmp_path, capsys):
    (l1, i1), (l2, i2) = active(rm)
    ids = [f"{l1}_{i1}_4", f"{l2}_{i2}_4"]
    by_option = run(saved, capsys, "--supernode", f"grp={','.join(ids)}", "--scale", "grp=-2")[1]
    graph_json = tmp_path / "g.json"
    graph_json.write_text(json.dumps({"qParams": {"pinnedIds": [], "supernodes": [["grp", *ids], ["other", "E_3_1"]]}}))
    url = "https://www.neuronpedia.org/gemma-2-2b/graph?slug=x&supernodes=" + quote(json.dumps([["grp", *ids]]))
    for source in (str(graph_json), url):
        code, out, err = run(saved, capsys, "--supernodes-from", source, "--scale", "grp=-2")
        assert code == EXIT_OK, err
        assert out == by_option
    assert "KL" in by_option and "'grp'" in by_option


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scale", "0_5=-2", "--set", "0_5=0"], "conflicting edits of feature 0_5"),
        (["--swap", "a=b"], "--swap needs --swap-from"),
        (["--swap", "0_5_1=1_3", "--swap-from", OTHER], "'1_3' has ids without a position"),
        (["--swap", "0_5_1", "--swap-from", OTHER], "--swap expects DOWN=UP"),
        (["--swap-from", OTHER, "--scale", "0_5=2"], "--swap-from is used only with --swap"),
        (["--swap-at-down", "--scale", "0_5=2"], "--swap-at-down is used only with --swap"),
        (["--ablate-errors", "x"], "--ablate-errors 'x'"),
        (["--add", "0_5=abc"], "--add '0_5=abc'"),
        (["--scale", "0_5=2", "--sample"], "--sample: only with --generate N"),
        (["--scale", "0_5=2", "--generate", "3", "--temperature", "0.5"], "add --sample"),
        (["--scale", "0_5=2", "--generate", "3", "--mode", "constrained"], "free mode"),
        (["--supernodes-from", "/no/such/graph.json", "--scale", "x=1"], "no such graph JSON file"),
        ([], "no edits given"),
    ],
)
def test_bad_options_fail_before_loading(tmp_path, capsys, args, message):
    code = main(["intervene", PROMPT, "--model", str(tmp_path / "no-model"), "--transcoders", str(tmp_path), *args])
    assert code == EXIT_INPUT  # not 3: the model (which does not exist) is never loaded
    assert message in one_error(capsys.readouterr().err)


def test_generate_prints_edited_and_unedited_continuations(saved, rm, capsys):
    (l, i), _ = active(rm)
    code, out, _ = run(saved, capsys, "--scale", f"{l}_{i}=-8", "--generate", "5")
    assert code == EXIT_OK
    expected = ct.generate(rm, PROMPT, [ct.scale_feature(l, i, -8.0)], max_new_tokens=5)
    assert out.strip() == str(expected).strip()
    assert "edited" in out and "unedited" in out


def test_sampling_is_reproducible_under_a_seed(saved, rm, capsys):
    (l, i), _ = active(rm)
    args = ["--add", f"{l}_{i}=4", "--generate", "6", "--sample", "--temperature", "2", "--top-p", "0.95"]
    first = run(saved, capsys, *args, "--seed", "7", "--apply-to", "generated")[1]
    again = run(saved, capsys, *args, "--seed", "7", "--apply-to", "generated")[1]
    assert first == again and "seed 7" in first and "generated positions" in first
    expected = ct.generate(
        rm,
        PROMPT,
        [ct.add_feature(l, i, 4.0)],
        max_new_tokens=6,
        do_sample=True,
        temperature=2.0,
        top_p=0.95,
        seed=7,
        apply_to="generated",
    )
    assert first.strip() == str(expected).strip()


def test_html_figure(saved, rm, tmp_path, capsys):
    (l, i), _ = active(rm)
    out_html = tmp_path / "fig.html"
    code, out, _ = run(saved, capsys, "--supernode", f"grp={l}_{i}_4", "--scale", "grp=0", "--html", str(out_html))
    assert code == EXIT_OK and f"wrote {out_html}" in out
    text = out_html.read_text()
    assert "plotly" in text and "grp" in text


def test_strongest_edits_the_features_the_graph_picks(saved, rm, capsys):
    code, out, _ = run(saved, capsys, "--strongest", "2", "--scale", "strongest=-3")
    assert code == EXIT_OK
    sn = ct.strongest_inputs(ct.attribute(rm, PROMPT, progress=False), k=2)
    expected = ct.intervene(rm, PROMPT, sn.edits("scale", -3.0))
    assert str(expected) in out and "'strongest'" in out


def test_strongest_with_a_bad_edit_is_bad_input(saved, capsys):
    code, _, err = run(saved, capsys, "--strongest", "1", "--scale", "strongest=x")
    assert code == EXIT_INPUT and "is not a number" in one_error(err)
