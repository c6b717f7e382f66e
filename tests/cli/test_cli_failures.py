"""Clean failures of the command line (one line on stderr, the documented exit code, nothing left
half-written), the `train` options' link to `TrainConfig`, and file modes under the umask."""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import stat

import helpers
import pytest
import torch

from circuit_trace.atomic import atomic_write_text
from circuit_trace.cli import EXIT_INPUT, EXIT_LOAD, add_train_arguments, config_from_args, main
from circuit_trace.transcoders import Transcoder
from circuit_trace.transcoders.formats import save_transcoder
from circuit_trace.transcoders.training import TrainConfig


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-failures")
    helpers.save_llama_and_clt(root)
    (root / "corpus.txt").write_text("w1 w2 w3 w4 w5\n\nw6 w7 w8 w9\n")
    return root


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert err.rstrip().endswith(lines[0]), err  # the error is the last thing said
    return lines[0]


def test_serve_on_a_port_in_use(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(tmp_path), "--port", str(port)]) == EXIT_INPUT
    err = one_error_line(capsys)
    assert f"port {port} is already in use" in err and "--port 0" in err


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_serve_on_an_invalid_port(tmp_path, capsys, port):
    with pytest.raises(SystemExit) as exc:
        main(["serve", str(tmp_path), "--port", port])
    assert exc.value.code == EXIT_INPUT
    assert "a port is 0-65535" in capsys.readouterr().err


def test_serve_on_an_address_not_on_this_machine(tmp_path, capsys):
    # 192.0.2.0/24 is reserved for documentation (RFC 5737): never a local address
    assert main(["serve", str(tmp_path), "--host", "192.0.2.1", "--port", "0"]) == EXIT_INPUT
    assert "cannot serve on 192.0.2.1:0" in one_error_line(capsys)


@pytest.mark.parametrize("command", ["trace", "intervene"])
def test_cuda_on_a_cpu_only_torch(saved, tmp_path, capsys, monkeypatch, command):
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)  # as on a +cpu build
    extra = ["-o", str(tmp_path / "g.json")] if command == "trace" else ["--scale", "0_1=2"]
    code = main(
        [
            command,
            "w1 w2",
            "--model",
            str(saved / "model"),
            "--transcoders",
            str(saved / "clt"),
            "--device",
            "cuda",
            *extra,
        ]
    )
    assert code == EXIT_INPUT
    assert "no CUDA support" in one_error_line(capsys)
    assert not (tmp_path / "g.json").exists()


@pytest.mark.parametrize("command", ["trace", "demo"])
def test_a_failed_run_leaves_no_default_output_folder(saved, tmp_path, capsys, monkeypatch, command):
    """Without -o the graph goes to graphs/ under the working directory: made by the write, so a
    run that fails before it leaves no empty folder behind."""
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    monkeypatch.chdir(tmp_path)
    model = (
        ["w1 w2", "--model", str(saved / "model"), "--transcoders", str(saved / "clt")] if command == "trace" else []
    )
    assert main([command, *model, "--device", "cuda"]) == EXIT_INPUT
    one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_cuda_without_a_gpu(saved, capsys, monkeypatch):
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(["train", "--model", str(saved / "model"), "--corpus", str(saved / "corpus.txt"), "--device", "cuda"])
    assert code == EXIT_INPUT
    assert "CUDA is not available" in one_error_line(capsys)


def test_demo_device_checked_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    assert main(["demo", "--device", "cuda", "-o", str(tmp_path / "d.json")]) == EXIT_INPUT
    one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "option, value, field",
    [
        ("--lr", "-1", "lr"),
        ("--lr", "nan", "lr"),
        ("--lambda-s", "-0.5", "lambda_s"),
        ("--features", "0", "n_features"),
    ],
)
def test_train_bad_numbers(saved, tmp_path, capsys, option, value, field):
    out = tmp_path / "out"
    code = main(
        [
            "train",
            "--model",
            str(saved / "model"),
            "--corpus",
            str(saved / "corpus.txt"),
            "--out",
            str(out),
            "--no-progress",
            option,
            value,
        ]
    )
    assert code == EXIT_INPUT
    assert field in one_error_line(capsys)
    assert not out.exists()


def test_failed_train_leaves_no_empty_output_directory(saved, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", str(saved / "model"), "--corpus", str(tmp_path / "missing.txt")]
    argv += ["--features", "8", "--out", str(out), "--no-progress"]
    code = main(argv)
    assert code == EXIT_INPUT and "missing.txt" in one_error_line(capsys)
    assert not out.exists()
    # a directory the user made beforehand stays, even empty
    out.mkdir()
    code = main(argv)
    assert code == EXIT_INPUT and out.is_dir()


def test_failed_model_load_in_train_is_a_load_error(saved, tmp_path, capsys):
    code = main(
        [
            "train",
            "--model",
            str(tmp_path / "no-model"),
            "--corpus",
            str(saved / "corpus.txt"),
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ]
    )
    assert code == EXIT_LOAD
    one_error_line(capsys)
    assert not (tmp_path / "o").exists()


def parse_train(*args: str) -> argparse.Namespace:
    return add_train_arguments(argparse.ArgumentParser()).parse_args(["--model", "m", "--corpus", "c", *args])


def test_train_defaults_are_train_config_defaults():
    assert config_from_args(parse_train()) == TrainConfig()


def test_every_train_config_field_is_an_option():
    changed = {
        "kind": "plt",
        "n_features": 48,
        "activation": "topk",
        "k": 7,
        "skip": True,
        "steps": 11,
        "n_tokens": 999,
        "batch_size": 64,
        "lr": 1e-3,
        "lr_warmup_steps": 3,
        "lr_decay_frac": 0.5,
        "lambda_s": 2.5,
        "lambda_s_ramp": 0.5,
        "lambda_p": 1e-5,
        "tanh_c": 3.0,
        "init_threshold": 0.25,
        "init_density": 0.1,
        "bandwidth": 0.2,
        "aux_k": 9,
        "aux_coef": 0.5,
        "dead_window": 5000,
        "normalize": False,
        "norm_tokens": 100,
        "context_size": 64,
        "pack": True,
        "input_hook": "hook_resid_mid",
        "output_hook": "mlp.hook_out",
        "outlier_ratio": 5.0,
        "output_outlier_ratio": 50.0,
        "vocab_chunk": 4096,
        "layers": "0-3",
        "cache": "acts/",
        "spike_ratio": 20.0,
        "threads": 2,
        "buffer_tokens": 4096,
        "forward_batch_size": 3,
        "eval_tokens": 128,
        "seed": 5,
        "checkpoint_every": 7,
        "keep_checkpoints": 1,
        "log_every": 2,
        "out_dir": "runs/x",
        "device": "cpu",
        "dtype": "bfloat16",
        "autocast": False,
        "reuse_memory": False,
        "name": "mine",
    }
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(changed) == fields, "a TrainConfig field was added: give it a value here"
    flags = {"n_features": "--features", "n_tokens": "--tokens", "out_dir": "--out"}
    argv: list[str] = []
    for name, value in changed.items():
        flag = flags.get(name, "--" + name.replace("_", "-"))
        argv += [flag if value is not False else "--no-" + flag[2:]] if isinstance(value, bool) else [flag, str(value)]
    assert dataclasses.asdict(config_from_args(parse_train(*argv))) == changed


def test_an_optional_number_can_be_switched_off(capsys):
    """--outlier-ratio is on by default (10); 'off' / 'none' give None, as TrainConfig takes it."""
    assert config_from_args(parse_train("--outlier-ratio", "off")).outlier_ratio is None
    assert config_from_args(parse_train("--lr", "None", "--outlier-ratio", "3")).outlier_ratio == 3.0
    with pytest.raises(SystemExit) as e:
        parse_train("--outlier-ratio", "often")
    assert e.value.code == 2 and "invalid float value: 'often'" in capsys.readouterr().err


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = atomic_write_text(tmp_path / "f.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_saved_transcoder_files_respect_the_umask(tmp_path, umask, mode):
    # safetensors writes its files 0600 whatever the umask; a saved transcoder must not
    tc = Transcoder.random(2, 8, 16, seed=0)
    old = os.umask(umask)
    try:
        save_transcoder(tc, tmp_path / "tc")
    finally:
        os.umask(old)
    files = sorted((tmp_path / "tc").iterdir())
    assert any(f.suffix == ".safetensors" for f in files)
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: mode for f in files}
