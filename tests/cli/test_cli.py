"""The `circuit-trace` command line: outputs, exit codes and messages a script can rely on."""

from __future__ import annotations

import json

import helpers
import pytest

from circuit_trace.cli import EXIT_INPUT, EXIT_LOAD, EXIT_OK, main
from circuit_trace.transcoders import Transcoder


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny Llama + tokenizer and a CLT, saved to disk as a user would have them."""
    root = tmp_path_factory.mktemp("cli")
    helpers.save_llama_and_clt(root, name="tiny-clt")
    return root


def run(saved, *args):
    return main(["trace", *args, "--model", str(saved / "model"), "--transcoders", str(saved / "clt"), "-q"])


def test_trace_writes_valid_json_and_prints_summary(saved, tmp_path, capsys):
    out = tmp_path / "g.json"
    assert run(saved, "w1 w5 w7 w9", "-o", str(out)) == EXIT_OK
    text = capsys.readouterr().out
    for needle in ("top logits:", "after pruning", "replacement score:", "completeness score:", "time:"):
        assert needle in text
    doc = json.loads(out.read_text())
    assert doc["metadata"]["prompt"] == "w1 w5 w7 w9"
    assert {n["feature_type"] for n in doc["nodes"]} >= {"embedding", "logit"}
    assert not list(tmp_path.glob("*.tmp*")), "temporary files left behind"


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["   "], EXIT_INPUT, "empty prompt"),
        ([" ".join(["w3"] * 30)], EXIT_INPUT, "context"),
        (["w1", "-o", "/no/such/dir/g.json"], EXIT_INPUT, "does not exist"),
    ],
)
def test_bad_input_exit_codes(saved, capsys, args, code, message):
    assert run(saved, *args) == code
    assert message in capsys.readouterr().err


def test_bad_numbers_are_usage_errors(saved):
    for bad in (["--max-feature-nodes", "0"], ["--node-threshold", "1.5"], ["--batch-size", "-3"]):
        with pytest.raises(SystemExit) as exc:
            run(saved, "w1 w2", *bad)
        assert exc.value.code == 2


def test_mismatched_transcoders_fail_to_load(saved, tmp_path, capsys):
    Transcoder.random(2, 32, 16, cross_layer=False, seed=0, input_hook="ln2.hook_normalized").save(
        str(tmp_path / "plt")
    )
    code = main(
        [
            "trace",
            "w1 w2",
            "--model",
            str(saved / "model"),
            "--transcoders",
            str(tmp_path / "plt"),
            "-q",
            "-o",
            str(tmp_path / "g.json"),
        ]
    )
    assert code == EXIT_LOAD
    err = capsys.readouterr().err
    assert "layer" in err and not (tmp_path / "g.json").exists()


def test_missing_checkpoint_fails_to_load(saved, tmp_path, capsys):
    code = main(
        [
            "trace",
            "w1",
            "--model",
            str(saved / "model"),
            "--transcoders",
            str(tmp_path / "nope"),
            "-q",
            "-o",
            str(tmp_path / "g.json"),
        ]
    )
    assert code == EXIT_LOAD
    assert "nope" in capsys.readouterr().err


def test_help_and_other_commands_start_without_the_training_stack(capsys):
    """`--help` (and any command but train / harvest) registers those two by name only: their
    options come from the training configs, whose import pulls in torch (seconds per call)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from circuit_trace.cli import main\n"
        "for argv in (['--help'], ['serve', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "train" in out and "harvest" in out and "TORCH False" in out
    with pytest.raises(SystemExit):
        main(["harvest", "--help"])  # the command that runs gets every option
    assert "--shard-tokens" in capsys.readouterr().out


def test_help_documents_every_trace_option(capsys):
    with pytest.raises(SystemExit):
        main(["trace", "--help"])
    text = capsys.readouterr().out
    for opt in (
        "--model",
        "--transcoders",
        "--output",
        "--node-threshold",
        "--edge-threshold",
        "--max-feature-nodes",
        "--batch-size",
        "--device",
        "--dtype",
    ):
        assert opt in text


def test_intervene_prints_before_and_after(saved, capsys):
    code = main(
        [
            "intervene",
            "w1 w5 w7 w9",
            "--model",
            str(saved / "model"),
            "--transcoders",
            str(saved / "clt"),
            "--scale",
            "1_3=-2",
            "--set",
            "0_5=4",
        ]
    )
    assert code == EXIT_OK
    out = capsys.readouterr().out
    assert "before" in out and "after" in out and "KL" in out


@pytest.mark.parametrize("edit", [["--scale", "9_3=-2"], ["--set", "0_99999=1"], ["--scale", "1_3=nan"], []])
def test_intervene_bad_edits(saved, capsys, edit):
    code = main(["intervene", "w1 w5", "--model", str(saved / "model"), "--transcoders", str(saved / "clt"), *edit])
    assert code == EXIT_INPUT
    assert "error:" in capsys.readouterr().err


def test_intervene_supernode_without_positions(saved, capsys):
    code = main(
        [
            "intervene",
            "w1 w5 w7 w9",
            "--model",
            str(saved / "model"),
            "--transcoders",
            str(saved / "clt"),
            "--supernode",
            "grp=1_3,0_5",
            "--set",
            "grp=0",
        ]
    )
    assert code == EXIT_OK, capsys.readouterr().err
    assert "after" in capsys.readouterr().out


def test_train_bad_inputs_exit_codes(saved, tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("w1 w2 w3\n")
    missing = main(
        [
            "train",
            "--model",
            str(saved / "model"),
            "--corpus",
            str(tmp_path / "none.txt"),
            "--features",
            "8",
            "--out",
            str(tmp_path / "o1"),
            "--no-progress",
        ]
    )
    assert missing == EXIT_INPUT and "none.txt" in capsys.readouterr().err
    bad_model = main(
        [
            "train",
            "--model",
            str(tmp_path / "no-model"),
            "--corpus",
            str(corpus),
            "--features",
            "8",
            "--out",
            str(tmp_path / "o2"),
            "--no-progress",
        ]
    )
    assert bad_model == EXIT_LOAD and "error:" in capsys.readouterr().err
