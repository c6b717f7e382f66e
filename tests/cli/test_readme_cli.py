"""Every `circuit-trace ...` line in the README's bash blocks runs here, as written, in README order
in one scratch directory (the organism by default; `path/to/model`, `path/to/clt`,
`path/to/transcoders`, `corpus.txt` and `prompts.txt` exist there as a tiny model, its CLT and small
text files), and its output shows the effect the README states beside it. A line this module has no
check for, and no reason not to run, fails `test_every_readme_example_is_covered`.

`--strongest` finds its feature in the prompt's graph; the ids of the supernode and swap examples
were found with the public API on the organism (`ct.strongest_inputs`; the features active at the
last position for one city's prompt and not the other's, by activation). If the organism is
retrained these checks fail: find the new ids the same way and update the README."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import helpers
import pytest

from circuit_trace.cli import EXIT_OK, build_parser, main

README = Path(__file__).resolve().parents[2] / "README.md"
DALLAS = "Fact: the capital of the state containing Dallas is"


def readme_commands() -> list[str]:
    """The `circuit-trace` command of each line of the README's bash blocks, comments dropped."""
    text = README.read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            if "circuit-trace " not in line or line.lstrip().startswith("#"):
                continue
            argv = shlex.split(line[line.index("circuit-trace ") :], comments=True)
            commands.append(shlex.join(argv))
    return commands


# Examples not run here, and why. Each must still be in the README (checked below).
NOT_RUN = {
    "circuit-trace train --model path/to/model --corpus corpus.txt --kind clt --features 1024 --out runs/clt": (
        "trains for 2000 steps (minutes); `train` runs in tests/cli/test_cli_train*.py with few steps"
    ),
    "circuit-trace harvest --model path/to/model --corpus corpus.txt --out cache/ --max-tokens 2000000": (
        "harvests 2M tokens of activations (minutes); harvest runs in tests/transcoders/training"
    ),
    "circuit-trace train --cache cache/ --kind plt --features 2048 --out runs/plt": (
        "trains from the harvest above, which is not run here; see tests/cli/test_cli_train_cache.py"
    ),
    "circuit-trace train ... --cache cache/ --layers 0-14 --out runs/a": "a sketch (`...`), not a full command",
    "circuit-trace train ... --cache cache/ --layers 15-29 --out runs/b": "a sketch (`...`), not a full command",
    "circuit-trace merge-transcoders runs/a runs/b --out runs/merged": (
        "merges the two runs above, which are not run here; merging is tested in tests/transcoders/training"
    ),
    "circuit-trace train ... --cache cache/ --layers 3-6 --tokens 2000000 --out runs/weak": (
        "a sketch (`...`), not a full command"
    ),
    "circuit-trace merge-transcoders runs/plt runs/weak --replace --out runs/spliced": (
        "splices the runs above, which are not run here; `--replace` runs in tests/transcoders/training/test_cli_harvest.py"
    ),
    "circuit-trace serve graphs/": "a server that runs until stopped; tests/viz start it and drive it in a browser",
    "circuit-trace trace 'The capital of Texas is' --model google/gemma-2-2b --transcoders gemma": (
        "downloads Gemma-2-2B and its transcoders (no network in CI)"
    ),
    "circuit-trace sweep prompts.jsonl --out sweeps/facts --workers 4": "needs Ray (the [sweep] extra)",
    "circuit-trace sweep prompts.jsonl --out sweeps/facts --address auto": "needs a running Ray cluster",
}


# The SmolLM2 recipe of the README's training section: hours of harvest and training on the real
# model; each command's options are checked against the parser below.
SMOLLM2_RECIPE = (
    "circuit-trace harvest --model '$GGUF_DIR' --corpus /usr/share/vim/vim90/doc --out C --context-size 128 --max-tokens 1000000 --threads 2",
    "circuit-trace train --cache C --model '$GGUF_DIR' --kind plt --activation topk --k 64 --features 2048 --skip --lr 2e-3 --tokens 983040 --eval-tokens 16384 --threads 2 --out runs/all",
    "circuit-trace train --cache C --kind plt --activation topk --k 64 --features 2048 --skip --lr 2e-3 --tokens 1966080 --eval-tokens 16384 --threads 2 --layers 3-6,25 --out runs/weak",
    "circuit-trace train --cache C --kind plt --activation topk --k 64 --features 8192 --skip --lr 2e-3 --tokens 983040 --eval-tokens 16384 --threads 2 --layers 3,4 --out runs/wide",
    "circuit-trace merge-transcoders runs/all runs/weak runs/wide --replace --pad --out runs/smollm2-plt --eval-cache C --model '$GGUF_DIR' --eval-tokens 16384",
)
NOT_RUN.update(
    {c: "the SmolLM2 recipe (hours on the real model); its options are parsed in a test" for c in SMOLLM2_RECIPE}
)


def top_rows(out: str, column: int) -> list[tuple[str, float]]:
    """(token, p) of the before (0) or after (1) column of an intervention table."""
    rows = re.findall(r"^\s+\d+\s+('.*?') (\S+)\s+('.*?') (\S+)\s*$", out, flags=re.M)
    return [(eval(r[2 * column]), float(r[2 * column + 1])) for r in rows]  # noqa: S307  # our own repr output


def top_logit_p(out: str, token: str) -> float:
    """p of `token` in a `top logits:` / `targets:` listing (0 when it is not listed)."""
    found = re.search(rf"^\s+'{token}'  p=(\S+)$", out, flags=re.M)
    return float(found.group(1)) if found else 0.0


def check_demo(out: str, cwd: Path) -> None:
    assert top_logit_p(out, " Austin") > 0.98 and (cwd / "graphs/dallas-austin.json").is_file()
    # the strongest Dallas -> Austin path passes through a feature at Dallas labelled Texas (or TX)
    assert re.search(
        r"strongest path Dallas -> Austin:\n  token ' Dallas'.*\n    feature \S+ at ' Dallas' \"[^\"]*(Texas|TX)\"", out
    )
    assert "strongest path Dallas -> [Texas feature at Dallas] -> Austin: the one above" in out


def check_trace_dallas(out: str, cwd: Path) -> None:
    assert top_logit_p(out, " Austin") > 0.98
    assert (cwd / "graphs/dallas.html").is_file() and (cwd / "graphs/dallas.safetensors").is_file()


def check_logit_diff(out: str, cwd: Path) -> None:
    value = float(re.search(r"' Austin -  ?Dallas'  value=(\S+)", out).group(1))  # type: ignore[union-attr]
    assert value > 5  # Austin far above Dallas


def check_targets(out: str, cwd: Path) -> None:
    assert out.startswith("targets:") and top_logit_p(out, " Austin") > 0.98 and "' Texas'  p=" in out


def check_validate(out: str, cwd: Path) -> None:
    assert "Spearman total" in out and "goal 0.72" in out and (cwd / "graphs/dallas-validation.html").is_file()


def diagnose_rows(text: str) -> dict[str, tuple[float, float, float]]:
    """{step: (ff, fl, max gap)} of a `validate --diagnose` table."""
    rows = re.findall(r"^  (nothing|\+ \w+) +(\S+) +(\S+) +(\S+)$", text, flags=re.M)
    return {r[0]: (float(r[1]), float(r[2]), float(r[3])) for r in rows}


def check_diagnose(out: str, cwd: Path) -> None:
    """The table the README shows for `validate ... --diagnose` on the demo prompt is this output, to
    0.01 (thread counts reorder the smallest effects) and the part named for each rise."""
    block = re.search(r"```text\n\$ circuit-trace validate .*? --diagnose\n(.*?)```", README.read_text(), flags=re.S)
    assert block is not None, "the README's --diagnose example output"
    shown, got = diagnose_rows(block.group(1)), diagnose_rows(out)
    assert list(shown) == list(got) == ["nothing", "+ norms", "+ attention", "+ errors", "+ choice"], out
    for step, (ff, fl, _) in shown.items():
        assert got[step][:2] == pytest.approx((ff, fl), abs=0.01), (step, out)
    # everything frozen: exact up to float32 rounding (1.7e-05 on logits near 30; the other steps miss by > 1)
    assert got["+ choice"][2] < 1e-4
    for line in re.findall(r"^feature->.*? comes from freezing \w+", block.group(1), flags=re.M):
        assert re.sub(r"\(\+\S+\)", "", line) in re.sub(r"\(\+\S+\)", "", out)


def check_inhibit(out: str, cwd: Path) -> None:
    before, after = top_rows(out, 0), top_rows(out, 1)
    assert before[0][0] == " Austin" and before[0][1] > 0.98
    assert after[0][0] == " Phoenix" and dict(after).get(" Austin", 0.0) < 0.05
    assert "3_815@10 ' is': scale -1" in out  # the feature the README names


def check_generate(out: str, cwd: Path) -> None:
    assert re.search(r"^\s+edited\s+' Phoenix", out, flags=re.M)
    assert re.search(r"^\s+unedited ' Austin", out, flags=re.M)


def check_sample(out: str, cwd: Path, again: str) -> None:
    assert "sampled (T=1.5, top_p=1, seed 0)" in out and out == again  # the same seed, the same text


def check_supernode_url(out: str, cwd: Path) -> None:
    (before, p_before), after = top_rows(out, 0)[0], dict(top_rows(out, 1))
    assert before == " Austin" and after.get(" Austin", 0.0) < 0.2 * p_before and "'texas'" in out


def check_swap(out: str, cwd: Path) -> None:
    after = top_rows(out, 1)
    assert after[0][0] == " Sacramento" and dict(after).get(" Austin", 0.0) < 0.2 * top_rows(out, 0)[0][1]
    assert re.search(r"'texas'.* => 0 +\(0%\)", out)


def check_ablate_errors(out: str, cwd: Path) -> None:
    assert top_rows(out, 1)[0][0] == " Austin"
    kl = float(re.search(r"KL\(clean \|\| edited\) = (\S+) nats", out).group(1))  # type: ignore[union-attr]
    assert 0 < kl < 0.05


def check_tiny_trace(out: str, cwd: Path) -> None:
    assert "top logits:" in out and "replacement score:" in out


def check_transcoders_list(out: str, cwd: Path) -> None:
    assert "gemma" in out and "llama" in out and "sets;" in out


def check_transcoders_show(out: str, cwd: Path) -> None:
    assert "hub_ref" in out and "llama" in out.lower()


def check_sweep(out: str, cwd: Path) -> None:
    assert "2 prompts: 2 traced" in out and (cwd / "sweeps/facts/sweep.json").is_file()


def check_features(out: str, cwd: Path) -> None:
    assert re.search(r"^192 features \(\d+ never active\) over 40 contexts", out, flags=re.M)  # 3 layers x 64
    assert (cwd / "path/to/transcoders/features/index.json.gz").is_file()


# command prefix (after `circuit-trace `) -> check(out, cwd); the first matching prefix wins
CHECKS = [
    ("demo", check_demo),
    (f"trace '{DALLAS}' -o graphs/dallas.json", check_trace_dallas),
    (f"trace '{DALLAS}' -o graphs/dallas-diff.json --logit-diff", check_logit_diff),
    (f"trace '{DALLAS}' -o graphs/dallas-texas.json --target", check_targets),
    ("validate --graph graphs/dallas.safetensors --diagnose", check_diagnose),
    ("validate --graph graphs/dallas.safetensors", check_validate),
    (f"intervene '{DALLAS}' --strongest 1 --scale strongest=-1 --generate 5 --sample", check_sample),
    (f"intervene '{DALLAS}' --strongest 1 --scale strongest=-1 --generate 5", check_generate),
    (f"intervene '{DALLAS}' --strongest 1 --scale strongest=-1", check_inhibit),
    (f"intervene '{DALLAS}' --supernodes-from", check_supernode_url),
    (f"intervene '{DALLAS}' --supernode texas=", check_swap),
    (f"intervene '{DALLAS}' --ablate-errors", check_ablate_errors),
    ("trace 'The capital of Texas is' --model path/to/model", check_tiny_trace),
    ("trace 'The capital of Texas is' --model path/to/model --transcoders path/to/transcoders", check_tiny_trace),
    ("transcoders list", check_transcoders_list),
    ("transcoders show llama", check_transcoders_show),
    ("sweep prompts.txt --out sweeps/facts", check_sweep),
    ("features corpus.txt --model path/to/model", check_features),
]
COMMANDS = readme_commands()


def check_of(command: str):
    rest = command.removeprefix("circuit-trace ")
    return next((check for prefix, check in CHECKS if rest.startswith(prefix)), None)


def run(command: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(shlex.split(command)[1:])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """Run every covered README command in order in one directory: {command: (code, out, err)}."""
    root = tmp_path_factory.mktemp("readme")
    helpers.save_llama_and_clt(root, model_dir="path/to/model", clt_dir="path/to/clt")
    helpers.save_llama_and_clt(root, model_dir="path/to/model", clt_dir="path/to/transcoders")
    (root / "corpus.txt").write_text("\n".join(helpers.random_prompt(s) for s in range(40)) + "\n")
    (root / "prompts.txt").write_text(f"{DALLAS}\nFact: the capital of the state containing Oakland is\n")
    results = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for command in COMMANDS:
            if command not in NOT_RUN and check_of(command) is not None:
                results[command] = run(command)
        sample = next(c for c in COMMANDS if "--sample" in c)
        results["again: " + sample] = run(sample)
    return root, results


def test_every_readme_example_is_covered():
    assert len(COMMANDS) >= 15, COMMANDS
    uncovered = [c for c in COMMANDS if c not in NOT_RUN and check_of(c) is None]
    assert not uncovered, f"README examples with no check here: {uncovered}"
    stale = [c for c in NOT_RUN if c not in COMMANDS]
    assert not stale, f"NOT_RUN lists examples the README no longer has: {stale}"


@pytest.mark.parametrize("command", [c for c in COMMANDS if c not in NOT_RUN and check_of(c) is not None])
def test_readme_example_runs_and_shows_its_effect(ran, command):
    root, results = ran
    code, out, err = results[command]
    assert code == EXIT_OK, f"{command}\n{err[-2000:]}"
    check = check_of(command)
    if check is check_sample:
        check_sample(out, root, results["again: " + command][1])
    else:
        check(out, root)  # type: ignore[misc]


def test_examples_not_run_still_parse():
    """Every full command the README shows but the tests do not run has options the CLI accepts."""
    for command in NOT_RUN:
        if "..." not in command:
            args = shlex.split(command)[1:]
            build_parser(args[0]).parse_args(args)  # exits (SystemExit) on an unknown or bad option
