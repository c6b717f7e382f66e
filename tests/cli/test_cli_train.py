"""`circuit-trace train`: every `TrainConfig` field is an option (generated from the dataclass, so a
new field needs no edit), `--help` lists them all, `--skip`, `--bos` and a GGUF `--model` work end
to end, and the trained transcoder records a clean model id (never a local path)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing

import helpers
import pytest
import yaml

from circuit_trace.cli import EXIT_INPUT, EXIT_OK, add_train_arguments, build_parser, config_from_args, main
from circuit_trace.transcoders.training import TrainConfig
from circuit_trace.transcoders.training.trainer import KINDS, TRAINABLE_ACTIVATIONS

RENAMED = {"n_features": "--features", "n_tokens": "--tokens", "out_dir": "--out"}


def flag(name: str) -> str:
    return RENAMED.get(name, "--" + name.replace("_", "-"))


def init_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(TrainConfig) if f.init]


def other_value(f: dataclasses.Field, hint, default):
    """A value of field `f`'s type that differs from its default (and fits its choices)."""
    choices = f.metadata.get("choices") or {"kind": KINDS, "activation": TRAINABLE_ACTIVATIONS}.get(f.name)
    if choices:
        return next(c for c in choices if c != default)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if typing.get_origin(hint) is not None and len(args) == 1 else hint
    if typing.get_origin(base) is typing.Literal:
        return next(c for c in typing.get_args(base) if c != default)
    if base is bool:
        return not default if default is not None else True
    if base is int:
        return (default or 0) + 3
    if base is float:
        return (default or 0.0) + 0.375
    if typing.get_origin(base) in (list, tuple):
        return [1, 2]
    return "x-value"


def argv_for(name: str, value) -> list[str]:
    if isinstance(value, bool):
        return [flag(name) if value else "--no-" + flag(name)[2:]]
    if isinstance(value, list):
        return [flag(name), *map(str, value)]
    return [flag(name), str(value)]


def parse_train(*args: str) -> argparse.Namespace:
    return add_train_arguments(argparse.ArgumentParser()).parse_args(["--model", "m", "--corpus", "c", *args])


def test_every_train_config_field_is_an_option_with_its_type():
    hints, defaults = typing.get_type_hints(TrainConfig), TrainConfig()
    wanted, argv = {}, []
    for f in init_fields():
        wanted[f.name] = other_value(f, hints[f.name], getattr(defaults, f.name))
        argv += argv_for(f.name, wanted[f.name])
    args = parse_train(*argv)
    got = {name: getattr(args, name) for name in wanted}
    got = {k: list(v) if isinstance(v, tuple) else v for k, v in got.items()}
    assert got == wanted
    assert all(type(got[k]) is type(wanted[k]) for k in wanted), "an option parsed to the wrong type"


def test_train_defaults_are_train_config_defaults():
    assert config_from_args(parse_train()) == TrainConfig()


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["train", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for f in init_fields():
        assert flag(f.name) in text, f"{flag(f.name)} missing from `train --help`"
        assert f"TrainConfig.{f.name}" not in text, f"{f.name} has no help text"
    for option in ("--model", "--corpus", "--bos", "--resume", "--no-progress", "--skip", "--no-skip"):
        assert option in text
    assert "jumprelu" in text and "topk" in text and ".gguf" in text


def test_a_field_added_to_train_config_becomes_an_option(monkeypatch):
    """A new field needs no CLI edit: its type, default and help come from the dataclass."""

    @dataclasses.dataclass
    class Extended(TrainConfig):
        warmup_layers: int | None = None  # layers warmed up first
        mode: typing.Literal["fast", "exact"] = "exact"
        noted: float = dataclasses.field(default=0.5, metadata={"help": "a helpful text"})

    import circuit_trace.transcoders.training as training

    monkeypatch.setattr(training, "TrainConfig", Extended)
    parser = add_train_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--model", "m", "--corpus", "c", "--warmup-layers", "4", "--mode", "fast"])
    assert (args.warmup_layers, args.mode, args.noted) == (4, "fast", 0.5)
    text = parser.format_help()
    assert "layers warmed up first" in text and "a helpful text (default 0.5)" in text
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "m", "--corpus", "c", "--mode", "slow"])


# -- end to end on a tiny model ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-train")
    helpers.make_hf_model("llama", seed=3).save_pretrained(root / "tiny-llama")
    helpers.tokenizer().save_pretrained(root / "tiny-llama")
    words = [f"w{i}" for i in range(3, 60)]
    docs = [" ".join(words[(7 * k + j) % len(words)] for j in range(12)) for k in range(40)]
    (root / "corpus.txt").write_text("\n\n".join(docs))
    return root


def tiny_run(saved, out, *extra: str) -> list[str]:
    return [
        "train",
        "--model",
        str(saved / "tiny-llama"),
        "--corpus",
        str(saved / "corpus.txt"),
        "--kind",
        "plt",
        "--features",
        "16",
        "--steps",
        "3",
        "--batch-size",
        "32",
        "--eval-tokens",
        "32",
        "--context-size",
        "8",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def test_train_with_skip_records_skip_and_a_clean_model_name(saved, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny_run(saved, out, "--skip", "--bos", "<eos>")) == EXIT_OK, capsys.readouterr().err
    cfg = yaml.safe_load((out / "transcoder" / "config.yaml").read_text())
    assert cfg["skip_connection"] is True
    assert cfg["model_name"] == "tiny-llama"  # the directory's name, not its path
    assert str(tmp_path) not in (out / "transcoder" / "config.yaml").read_text()
    assert json.loads((out / "report.json").read_text())["config"]["skip"] is True


def test_a_training_warning_is_one_line(saved, tmp_path, monkeypatch):
    """`--autocast` where bf16 measures slower: the warning reaches the shell as `warning: ...`, one
    line without Python's source path (the default format restored after the command)."""
    import warnings

    from circuit_trace.transcoders.training import trainer

    monkeypatch.setattr(trainer, "cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(trainer, "bf16_speedup", lambda: 0.7)
    shown: list[str] = []
    monkeypatch.setattr(
        warnings,
        "showwarning",
        lambda m, c, f, n, file=None, line=None: shown.append(warnings.formatwarning(m, c, f, n, line)),
    )
    default = warnings.formatwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(tiny_run(saved, tmp_path / "run", "--autocast", "--device", "cpu")) == EXIT_OK
    autocast = [w for w in shown if "--autocast" in w]
    assert autocast == [
        "warning: --autocast: bf16 matrix products run at 0.70x the speed of float32 on this "
        "CPU, so autocast will not make training faster here; float32 (no --autocast) is the "
        "faster choice\n"
    ]
    assert warnings.formatwarning is default


def test_a_bos_that_is_no_token_is_bad_input(saved, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny_run(saved, out, "--bos", "<nope>")) == EXIT_INPUT
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [
        next(line for line in err.splitlines() if "--bos" in line)
    ]
    assert "not a token" in err and not out.exists()


@pytest.mark.parametrize("value", ["nope", "gelu"])
def test_a_bad_activation_is_one_line_and_exit_2(saved, tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exc:
        main(tiny_run(saved, tmp_path / "run", "--activation", value))
    assert exc.value.code == EXIT_INPUT
    assert "invalid choice" in capsys.readouterr().err


def test_train_on_a_gguf_model(saved, tmp_path, monkeypatch, capsys):
    pytest.importorskip("gguf")
    monkeypatch.setenv("CIRCUIT_TRACE_CACHE", str(tmp_path / "cache"))
    gguf_file = helpers.write_tiny_gguf(tmp_path / "models" / "tiny-llama.F32.gguf")
    (tmp_path / "abc.txt").write_text(
        "\n\n".join(" ".join("abcdefghij"[(i + j) % 10] for j in range(20)) for i in range(30))
    )
    out = tmp_path / "run"
    argv = tiny_run(saved, out, "--bos", "<|endoftext|>")
    argv[argv.index("--model") + 1] = str(gguf_file.parent)
    argv[argv.index("--corpus") + 1] = str(tmp_path / "abc.txt")
    assert main(argv) == EXIT_OK, capsys.readouterr().err
    cfg = yaml.safe_load((out / "transcoder" / "config.yaml").read_text())
    assert cfg["model_name"] == "tiny-llama.F32"
    assert list((tmp_path / "cache" / "gguf").iterdir())  # the converted copy, reused next time
