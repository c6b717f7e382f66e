"""Reading and writing transcoder checkpoints in the circuit-tracer layout.

Cross-layer transcoder (config `model_kind: cross_layer_transcoder`), one pair of files per layer l:
    W_enc_{l}.safetensors   W_enc_{l} [F, d], b_enc_{l} [F], b_dec_{l} [d],
                            optional threshold_{l} [F] (or log_threshold_{l}), W_skip_{l} [d, d]
    W_dec_{l}.safetensors   W_dec_{l} [F, L − l, d]
Per-layer transcoders (config `model_kind: transcoder_set`), one file per layer:
    layer_{l}.safetensors   W_enc [F, d], W_dec [F, d], b_enc [F], b_dec [d],
                            optional activation_function.threshold [F], W_skip [d, d]
    or a `transcoders:` list in config.yaml of paths / hf:// URIs (GemmaScope .npz accepted).
config.yaml: model_kind, feature_input_hook, feature_output_hook (circuit-tracer's keys), plus ours:
activation, k, n_layers, d_model, d_features, skip_connection, model_name, threshold_param.
W_skip is stored in nn.Linear orientation [d_out, d_in] (skip = x @ W_skip.T), as circuit-tracer's
per-layer transcoders do.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from ..atomic import atomic_directory
from ..hub import unavailable_message, use_local_files_only
from .errors import CheckpointError
from .hooks import normalize_hook_name
from .lazy import SafetensorsDecoderSource
from .transcoder import Transcoder

__all__ = ["load_transcoders", "save_transcoder", "CONFIG_NAME"]

CONFIG_NAME = "config.yaml"
_HUB_ID = re.compile(r"^(?:hf://)?([A-Za-z0-9][\w.-]*/[\w.-]+)(/[^@]*)?(?:@([\w./-]+))?$")
# Row block for scanning lazy decoders for NaN/inf without holding a layer in memory.
_SCAN_ROWS = 4096


# ====================================================================== writing
def _tensor(t: torch.Tensor) -> torch.Tensor:
    # safetensors refuses views that share storage; a contiguous CPU copy per tensor avoids that.
    return t.detach().to("cpu").contiguous().clone()


def _layer_files(tc: Transcoder, l: int) -> dict[str, dict[str, torch.Tensor]]:
    """The files (name -> tensors) that hold layer l."""
    thr: dict[str, torch.Tensor] = {}
    if tc.activation == "jumprelu":
        # Write the parameter we train (threshold or log-threshold) so a round trip is bit-exact.
        src = tc.threshold if tc.threshold_param == "threshold" else tc.log_threshold
        thr = {tc.threshold_param: src[l]}
    dec = tc.decoder(l)  # [F, n_out, d]; reads a lazy layer once
    if tc.is_cross_layer:
        enc = {f"W_enc_{l}": tc.W_enc[l], f"b_enc_{l}": tc.b_enc[l], f"b_dec_{l}": tc.b_dec[l]}
        enc.update({f"{k}_{l}": v for k, v in thr.items()})
        if tc.W_skip is not None:
            enc[f"W_skip_{l}"] = tc.W_skip[l]
        return {
            f"W_enc_{l}.safetensors": {k: _tensor(v) for k, v in enc.items()},
            f"W_dec_{l}.safetensors": {f"W_dec_{l}": _tensor(dec)},
        }
    one = {"W_enc": tc.W_enc[l], "W_dec": dec[:, 0, :], "b_enc": tc.b_enc[l], "b_dec": tc.b_dec[l]}
    if thr:
        key = "activation_function.threshold" if tc.threshold_param == "threshold" else "log_threshold"
        one[key] = next(iter(thr.values()))
    if tc.W_skip is not None:
        one["W_skip"] = tc.W_skip[l]
    return {f"layer_{l}.safetensors": {k: _tensor(v) for k, v in one.items()}}


def save_transcoder(tc: Transcoder, path: str | os.PathLike) -> None:
    """Write `tc` to directory `path` in the circuit-tracer layout.

    Atomic: everything is written into a temporary sibling directory which is then swapped into
    place (`atomic.atomic_directory`), so a crash or error never leaves a half-written or mixed
    checkpoint at `path`, and an old one stays intact until the new one is complete. An existing `path` is replaced only if it is
    empty or already a checkpoint (has config.yaml), so a typo cannot wipe an unrelated folder.
    Lazy decoder layers are read one at a time, so saving never holds the whole decoder.
    """
    path = Path(path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FileExistsError(f"{path} exists and is not a directory")
        if any(path.iterdir()) and not (path / CONFIG_NAME).exists():
            raise FileExistsError(f"{path} is a non-empty directory without {CONFIG_NAME}; refusing to replace it")
    with atomic_directory(path) as tmp:
        for l in range(tc.n_layers):
            for fname, tensors in _layer_files(tc, l).items():
                save_file(tensors, str(tmp / fname), metadata={"format": "pt"})
        cfg = tc.config_dict()
        if tc.activation == "jumprelu":
            cfg["threshold_param"] = tc.threshold_param
        with open(tmp / CONFIG_NAME, "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)


# ====================================================================== reading helpers
class _File:
    """An opened safetensors file whose errors name the file and tensor."""

    def __init__(self, path: Path):
        self.path = path
        if not path.is_file():
            raise CheckpointError(f"missing checkpoint file {path}", path=str(path))
        try:
            self._cm = safe_open(str(path), framework="pt", device="cpu")
            self.f = self._cm.__enter__()
        except Exception as e:
            raise CheckpointError(
                f"{path}: not a readable safetensors file (truncated or corrupt?): {e}", path=str(path)
            ) from e
        self.keys = set(self.f.keys())

    def close(self) -> None:
        self._cm.__exit__(None, None, None)

    def __enter__(self) -> _File:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def has(self, key: str) -> bool:
        return key in self.keys

    def shape(self, key: str) -> tuple[int, ...]:
        self._need(key)
        return tuple(self.f.get_slice(key).get_shape())

    def _need(self, key: str) -> None:
        if key not in self.keys:
            raise CheckpointError(
                f"{self.path}: missing tensor {key!r} (found: {', '.join(sorted(self.keys)) or 'none'})",
                path=str(self.path),
                tensor=key,
            )

    def get(self, key: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Read a tensor, checking its shape (if given) and that it is finite."""
        if shape is not None:
            _check_shape(self.path, key, self.shape(key), shape)
        self._need(key)
        try:
            t = self.f.get_tensor(key)
        except Exception as e:
            raise CheckpointError(
                f"{self.path}: cannot read tensor {key!r}: {e}", path=str(self.path), tensor=key
            ) from e
        _check_finite(t, self.path, key)
        return t


def _check_shape(path: Path | str, key: str, actual: tuple[int, ...], expected: tuple[int, ...]) -> None:
    if tuple(actual) != tuple(expected):
        raise CheckpointError(
            f"{path}: tensor {key!r} has shape {list(actual)}, expected {list(expected)}",
            path=str(path),
            tensor=key,
        )


def _check_finite(t: torch.Tensor, path: Path | str, key: str) -> None:
    if not t.is_floating_point():
        raise CheckpointError(f"{path}: tensor {key!r} has non-float dtype {t.dtype}", path=str(path), tensor=key)
    if not torch.isfinite(t).all():
        n_bad = int((~torch.isfinite(t)).sum())
        raise CheckpointError(f"{path}: tensor {key!r} contains {n_bad} NaN/inf value(s)", path=str(path), tensor=key)


def _scan_lazy(src: SafetensorsDecoderSource, n_rows: int) -> None:
    """Read a lazy decoder block by block so NaN/inf surface at load time (verify=True)."""
    for start in range(0, n_rows, _SCAN_ROWS):
        src.read(torch.arange(start, min(n_rows, start + _SCAN_ROWS)), torch.device("cpu"), torch.float32)


def _read_config(folder: Path) -> dict[str, Any]:
    cfg_path = folder / CONFIG_NAME
    if not cfg_path.is_file():
        raise CheckpointError(
            f"missing {CONFIG_NAME} in {folder} (needs model_kind, feature_input_hook, feature_output_hook)",
            path=str(cfg_path),
        )
    try:
        cfg = yaml.safe_load(cfg_path.read_text())
    except yaml.YAMLError as e:
        raise CheckpointError(f"{cfg_path}: invalid YAML: {e}", path=str(cfg_path)) from e
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path}: expected a mapping, got {type(cfg).__name__}", path=str(cfg_path))
    for key in ("model_kind", "feature_input_hook", "feature_output_hook"):
        if key not in cfg:
            raise CheckpointError(f"{cfg_path}: missing key {key!r}", path=str(cfg_path))
        try:
            if key != "model_kind":
                cfg[key] = normalize_hook_name(cfg[key])
        except ValueError as e:
            raise CheckpointError(f"{cfg_path}: {key}: {e}", path=str(cfg_path)) from e
    if cfg["model_kind"] not in ("cross_layer_transcoder", "transcoder_set"):
        raise CheckpointError(
            f"{cfg_path}: unknown model_kind {cfg['model_kind']!r} (expected 'cross_layer_transcoder' or 'transcoder_set')",
            path=str(cfg_path),
        )
    if "partial_layers" in cfg:  # a layer-subset training run (transcoders/training/merge.py)
        raise CheckpointError(
            f"{folder} is a partial transcoder set (layers {cfg['partial_layers']} of {cfg.get('n_model_layers')}); "
            "attribution needs every layer: merge the runs with `circuit-trace merge-transcoders`",
            path=str(cfg_path),
        )
    cfg["_path"] = str(cfg_path)
    return cfg


def _numbered(folder: Path, pattern: str) -> list[Path]:
    """Files `pattern.format(i)` for i = 0..n-1; raises naming the first missing index."""
    regex = re.compile("^" + re.escape(pattern).replace(r"\{\}", r"(\d+)") + "$")
    found = {int(m.group(1)): p for p in folder.iterdir() if (m := regex.match(p.name))}
    if not found:
        raise CheckpointError(f"no {pattern.format('*')} files in {folder}", path=str(folder))
    n = max(found) + 1
    missing = [i for i in range(n) if i not in found]
    if missing:
        raise CheckpointError(
            f"missing checkpoint file {folder / pattern.format(missing[0])}",
            path=str(folder / pattern.format(missing[0])),
        )
    return [found[i] for i in range(n)]


def _activation_from(cfg: dict[str, Any], has_threshold: bool) -> tuple[str, int | None]:
    act = cfg.get("activation")
    if act in ("jump_relu", "JumpReLU"):  # circuit-tracer's spelling
        act = "jumprelu"
    if act is None:
        act = "jumprelu" if has_threshold else "relu"
    if act == "jumprelu" and not has_threshold:
        raise CheckpointError(
            f"{cfg['_path']}: activation is jumprelu but the checkpoint has no thresholds", path=cfg["_path"]
        )
    k = cfg.get("k")
    if act == "topk" and k is None:
        raise CheckpointError(f"{cfg['_path']}: activation is topk but no 'k' is given", path=cfg["_path"])
    return act, (int(k) if act == "topk" and k is not None else None)


@dataclass(frozen=True)
class _Dims:
    """What a loader read from the first layer's files: the shape of the transcoder to build."""

    L: int
    F: int
    d: int
    cross_layer: bool
    skip: bool
    has_threshold: bool
    threshold_param: str = "threshold"  # or "log_threshold"


def _new(cfg: dict[str, Any], dims: _Dims, *, name: str, device: Any, dtype: torch.dtype) -> Transcoder:
    """An empty transcoder of `dims`, after checking them against the config's declared sizes."""
    act, k = _activation_from(cfg, dims.has_threshold)
    if cfg.get("n_layers") is not None and int(cfg["n_layers"]) != dims.L:
        raise CheckpointError(
            f"{cfg['_path']}: n_layers = {cfg['n_layers']} but {dims.L} layers of files were found", path=cfg["_path"]
        )
    for key, val in (("d_model", dims.d), ("d_features", dims.F)):
        if cfg.get(key) is not None and int(cfg[key]) != val:
            raise CheckpointError(f"{cfg['_path']}: {key} = {cfg[key]} but the tensors say {val}", path=cfg["_path"])
    try:
        return Transcoder(
            dims.L,
            dims.d,
            dims.F,
            cross_layer=dims.cross_layer,
            activation=act,
            skip=dims.skip,
            k=k,
            feature_input_hook=cfg["feature_input_hook"],
            feature_output_hook=cfg["feature_output_hook"],
            name=name,
            model_name=cfg.get("model_name"),
            threshold_param=dims.threshold_param,
            bandwidth=float(cfg.get("jumprelu_bandwidth", 0.1)),
            device=device,
            dtype=dtype,
            materialize_decoders=False,
        )
    except ValueError as e:
        raise CheckpointError(f"{cfg['_path']}: {e}", path=cfg["_path"]) from e


# ====================================================================== CLT layout
def _load_clt(
    folder: Path, cfg: dict[str, Any], name: str, device: Any, dtype: torch.dtype | None, lazy: bool, verify: bool
) -> Transcoder:
    enc_paths = _numbered(folder, "W_enc_{}.safetensors")
    L = len(enc_paths)
    with _File(enc_paths[0]) as f0:
        F, d = _shape2(f0, "W_enc_0")
        has_thr = f0.has("threshold_0") or f0.has("log_threshold_0")
        thr_param = "log_threshold" if (f0.has("log_threshold_0") and not f0.has("threshold_0")) else "threshold"
        if thr_param == "threshold" and cfg.get("threshold_param") == "log_threshold" and f0.has("log_threshold_0"):
            thr_param = "log_threshold"
        skip = f0.has("W_skip_0")
        file_dtype = f0.f.get_slice("b_enc_0").get_dtype() if f0.has("b_enc_0") else None
    dtype = dtype or _torch_dtype(file_dtype) or torch.float32
    tc = _new(cfg, _Dims(L, F, d, True, skip, has_thr, thr_param), name=name, device=device, dtype=dtype)
    with torch.no_grad():
        for l, p in enumerate(enc_paths):
            with _File(p) as f:
                tc.W_enc[l].copy_(f.get(f"W_enc_{l}", (F, d)))
                tc.b_enc[l].copy_(f.get(f"b_enc_{l}", (F,)))
                tc.b_dec[l].copy_(f.get(f"b_dec_{l}", (d,)))
                if tc.activation == "jumprelu":
                    getattr(tc, thr_param)[l].copy_(f.get(f"{thr_param}_{l}", (F,)))
                if skip:
                    tc.W_skip[l].copy_(f.get(f"W_skip_{l}", (d, d)))  # type: ignore[index]
                elif f.has(f"W_skip_{l}"):
                    raise CheckpointError(
                        f"{p}: has W_skip_{l} but layer 0 has no skip", path=str(p), tensor=f"W_skip_{l}"
                    )
            dec_path = folder / f"W_dec_{l}.safetensors"
            key, shape = f"W_dec_{l}", (F, L - l, d)
            with _File(dec_path) as f:
                _check_shape(dec_path, key, f.shape(key), shape)
                if not lazy:
                    tc.W_dec[l] = torch.nn.Parameter(f.get(key).to(device=tc.device, dtype=dtype))
            if lazy:
                _attach_lazy(tc, l, SafetensorsDecoderSource(str(dec_path), key, shape), verify)
    return tc


def _attach_lazy(tc: Transcoder, l: int, src: SafetensorsDecoderSource, verify: bool) -> None:
    """Layer l's decoder read from `src` on use; `verify` scans it for NaN/inf now."""
    if verify:
        _scan_lazy(src, tc.d_features)
    tc.set_lazy_decoder(l, src)


def _shape2(f: _File, key: str) -> tuple[int, int]:
    s = f.shape(key)
    if len(s) != 2:
        raise CheckpointError(
            f"{f.path}: tensor {key!r} has shape {list(s)}, expected [F, d_model]", path=str(f.path), tensor=key
        )
    return int(s[0]), int(s[1])


def _torch_dtype(st_dtype: str | None) -> torch.dtype | None:
    return {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}.get(
        st_dtype or ""
    )


# ====================================================================== transcoder_set layout
_PLT_THRESHOLD_KEYS = ("activation_function.threshold", "threshold")
_PLT_LOG_THRESHOLD_KEYS = ("log_threshold", "log_thresholds")


def _plt_paths(folder: Path, cfg: dict[str, Any]) -> list[Path]:
    entries = cfg.get("transcoders")
    if not entries:
        return _numbered(folder, "layer_{}.safetensors")
    out = []
    for entry in entries:
        entry = str(entry)
        if entry.startswith("hf://"):
            out.append(Path(_download_hf_uri(entry)))
        else:
            p = Path(entry).expanduser()
            out.append(p if p.is_absolute() else folder / p)
    return out


def _read_plt_layer(p: Path) -> tuple[dict[str, torch.Tensor], _File | None]:
    """Eagerly read one per-layer file, mapping GemmaScope (npz) and GemmaScope-2 key names to
    circuit-tracer's. Returns tensors (without W_dec for a safetensors file, which may stay lazy)
    and the open file (None for npz)."""
    if p.suffix == ".npz":
        import numpy as np

        if not p.is_file():
            raise CheckpointError(f"missing checkpoint file {p}", path=str(p))
        try:
            raw = {k: torch.from_numpy(np.asarray(v)) for k, v in np.load(p, allow_pickle=False).items()}
        except Exception as e:
            raise CheckpointError(f"{p}: not a readable npz file: {e}", path=str(p)) from e
        for key in ("W_enc", "W_dec", "b_enc", "b_dec"):
            if key not in raw:
                raise CheckpointError(f"{p}: missing tensor {key!r}", path=str(p), tensor=key)
        out = dict(raw)
        out["W_enc"] = raw["W_enc"].T.contiguous()  # GemmaScope stores W_enc as [d, F]
        for key, t in out.items():
            _check_finite(t.float() if not t.is_floating_point() else t, p, key)
        return out, None
    f = _File(p)
    if f.has("w_enc"):  # GemmaScope-2 naming: w_enc [d, F], w_dec [F, d], affine_skip_connection [d_in, d_out]
        out = {
            "W_enc": f.get("w_enc").T.contiguous(),
            "W_dec": f.get("w_dec"),
            "b_enc": f.get("b_enc"),
            "b_dec": f.get("b_dec"),
        }
        if f.has("threshold"):
            out["threshold"] = f.get("threshold")
        if f.has("affine_skip_connection"):
            out["W_skip"] = f.get("affine_skip_connection").T.contiguous()
        f.close()
        return out, None
    out = {"W_enc": f.get("W_enc"), "b_enc": f.get("b_enc"), "b_dec": f.get("b_dec")}
    for key in _PLT_THRESHOLD_KEYS:
        if f.has(key):
            out["threshold"] = f.get(key)
            break
    for key in _PLT_LOG_THRESHOLD_KEYS:
        if f.has(key):
            out["log_threshold"] = f.get(key)
            break
    if f.has("W_skip"):
        out["W_skip"] = f.get("W_skip")
    return out, f


def _plt_dims(p: Path, t: dict[str, torch.Tensor], cfg: dict[str, Any], L: int) -> _Dims:
    """The set's shape, read from its first layer's tensors."""
    if t["W_enc"].ndim != 2:
        raise CheckpointError(
            f"{p}: tensor 'W_enc' has shape {list(t['W_enc'].shape)}, expected [F, d_model]",
            path=str(p),
            tensor="W_enc",
        )
    F, d = t["W_enc"].shape
    has_log = "log_threshold" in t and not ("threshold" in t and cfg.get("threshold_param") != "log_threshold")
    has_thr = "threshold" in t or "log_threshold" in t
    return _Dims(L, F, d, False, "W_skip" in t, has_thr, "log_threshold" if has_log else "threshold")


def _check_plt_layer(p: Path, t: dict[str, torch.Tensor], tc: Transcoder, dims: _Dims) -> None:
    """Every tensor layer 0 promised is there, in its shape; no skip where layer 0 had none."""
    F, d = dims.F, dims.d
    expect = {"W_enc": (F, d), "b_enc": (F,), "b_dec": (d,)}
    if tc.activation == "jumprelu":
        expect[dims.threshold_param] = (F,)
    if dims.skip:
        expect["W_skip"] = (d, d)
    elif "W_skip" in t:
        raise CheckpointError(f"{p}: has W_skip but layer 0 has no skip", path=str(p), tensor="W_skip")
    for key, shape in expect.items():
        if key not in t:
            raise CheckpointError(f"{p}: missing tensor {key!r}", path=str(p), tensor=key)
        _check_shape(p, key, tuple(t[key].shape), shape)


def _copy_plt_layer(
    tc: Transcoder, l: int, p: Path, t: dict[str, torch.Tensor], f: _File | None, lazy: bool, verify: bool
) -> None:
    """Layer l's tensors into `tc`; its decoder from `t` (npz / GemmaScope-2), else from `f` or lazily."""
    F, d = tc.d_features, tc.d_model
    tc.W_enc[l].copy_(t["W_enc"])
    tc.b_enc[l].copy_(t["b_enc"])
    tc.b_dec[l].copy_(t["b_dec"])
    if tc.activation == "jumprelu":
        getattr(tc, tc.threshold_param)[l].copy_(t[tc.threshold_param])
    if tc.W_skip is not None:
        tc.W_skip[l].copy_(t["W_skip"])
    if f is None:  # npz / GemmaScope-2: decoder already in memory
        _check_shape(p, "W_dec", tuple(t["W_dec"].shape), (F, d))
        tc.W_dec[l] = torch.nn.Parameter(t["W_dec"].unsqueeze(1).to(device=tc.device, dtype=tc.dtype))
        return
    _check_shape(p, "W_dec", f.shape("W_dec"), (F, d))
    if lazy:
        _attach_lazy(tc, l, SafetensorsDecoderSource(str(p), "W_dec", (F, d), unsqueeze=True), verify)
    else:
        tc.W_dec[l] = torch.nn.Parameter(f.get("W_dec").unsqueeze(1).to(device=tc.device, dtype=tc.dtype))


def _load_plt_set(
    folder: Path, cfg: dict[str, Any], name: str, device: Any, dtype: torch.dtype | None, lazy: bool, verify: bool
) -> Transcoder:
    paths = _plt_paths(folder, cfg)
    tc: Transcoder | None = None
    dims: _Dims | None = None
    with torch.no_grad():
        for l, p in enumerate(paths):
            t, f = _read_plt_layer(p)
            try:
                if tc is None or dims is None:
                    dims = _plt_dims(p, t, cfg, len(paths))
                    tc = _new(cfg, dims, name=name, device=device, dtype=dtype or t["b_enc"].dtype)
                _check_plt_layer(p, t, tc, dims)
                _copy_plt_layer(tc, l, p, t, f, lazy, verify)
            finally:
                if f is not None:
                    f.close()
    assert tc is not None
    return tc


# ====================================================================== GemmaScope-2 CLT layout
GS2_CLT_FILE = "params_layer_{}.safetensors"


def _is_gs2_clt(folder: Path, cfg: dict[str, Any]) -> bool:
    """A CLT whose config lists per-layer files (circuit-tracer's GemmaScope-2 configs do) or whose
    folder holds params_layer_{i}.safetensors."""
    return bool(cfg.get("transcoders")) or (folder / GS2_CLT_FILE.format(0)).is_file()


def _gs2_slot_start(p: Path, shape: tuple[int, ...], F: int, L: int, l: int, d: int) -> int:
    """Which stored decoder slot is layer l's first target: all L slots stored (use l..) or only
    the L − l used ones (use all)."""
    if tuple(shape) == (F, L, d):
        return l
    if tuple(shape) == (F, L - l, d):
        return 0
    raise CheckpointError(
        f"{p}: tensor 'w_dec' has shape {list(shape)}, expected [{F}, {L}, {d}] (all target layers) "
        f"or [{F}, {L - l}, {d}] (layers {l}..{L - 1})",
        path=str(p),
        tensor="w_dec",
    )


def _load_gs2_clt(
    folder: Path, cfg: dict[str, Any], name: str, device: Any, dtype: torch.dtype | None, lazy: bool, verify: bool
) -> Transcoder:
    """GemmaScope-2 cross-layer transcoder: one params_layer_{i}.safetensors per layer with
    w_enc [d, F], w_dec [F, L, d] (slots i.. used), b_enc [F], b_dec [d] (bias of output layer i),
    threshold [F], optional affine_skip_connection [d, d] applied as x A."""
    paths = _plt_paths(folder, cfg) if cfg.get("transcoders") else _numbered(folder, GS2_CLT_FILE)
    L = len(paths)
    with _File(paths[0]) as f0:
        d, F = _shape2(f0, "w_enc")
        skip, has_thr = f0.has("affine_skip_connection"), f0.has("threshold")
        file_dtype = f0.f.get_slice("b_enc").get_dtype() if f0.has("b_enc") else None
    dtype = dtype or _torch_dtype(file_dtype) or torch.float32
    tc = _new(cfg, _Dims(L, F, d, True, skip, has_thr), name=name, device=device, dtype=dtype)
    with torch.no_grad():
        for l, p in enumerate(paths):
            with _File(p) as f:
                tc.W_enc[l].copy_(f.get("w_enc", (d, F)).T)  # stored [d, F]
                tc.b_enc[l].copy_(f.get("b_enc", (F,)))
                tc.b_dec[l].copy_(f.get("b_dec", (d,)))
                if tc.activation == "jumprelu":
                    tc.threshold[l].copy_(f.get("threshold", (F,)))
                if skip:  # x A = x (Aᵀ)ᵀ: our W_skip is nn.Linear-oriented
                    tc.W_skip[l].copy_(f.get("affine_skip_connection", (d, d)).T)  # type: ignore[index]
                elif f.has("affine_skip_connection"):
                    raise CheckpointError(
                        f"{p}: has affine_skip_connection but layer 0 has none",
                        path=str(p),
                        tensor="affine_skip_connection",
                    )
                shape = f.shape("w_dec")
                start = _gs2_slot_start(p, shape, F, L, l, d)
                if not lazy:
                    w = f.f.get_slice("w_dec")[:, start:]
                    _check_finite(w, p, "w_dec")
                    tc.W_dec[l] = torch.nn.Parameter(w.to(device=tc.device, dtype=dtype))
            if lazy:
                _attach_lazy(tc, l, SafetensorsDecoderSource(str(p), "w_dec", shape, slot_start=start), verify)
    return tc


# ====================================================================== sparsify / clt-training layout
SPARSIFY_CFG, SPARSIFY_WEIGHTS = "cfg.json", "sae.safetensors"
_LAYER_NUMBER = re.compile(r"(?:^|\.)(\d+)(?=\.|$)")


def is_sparsify_layout(folder: Path) -> bool:
    """True when `folder` holds EleutherAI sparsify hookpoint subfolders (<hookpoint>/cfg.json)."""
    return folder.is_dir() and any((p / SPARSIFY_CFG).is_file() for p in folder.iterdir() if p.is_dir())


def _sparsify_layers(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(hookpoint folder, cfg.json) per layer, in layer order; each hookpoint must be an MLP
    (`layers.{i}.mlp`, `h.{i}.mlp`, ...) trained with `transcode: true`."""
    found: dict[int, tuple[Path, dict[str, Any]]] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and (p / SPARSIFY_CFG).is_file()):
        cfg_path = sub / SPARSIFY_CFG
        try:
            cfg = json.loads(cfg_path.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{cfg_path}: not readable JSON: {e}", path=str(cfg_path)) from e
        nums = _LAYER_NUMBER.findall(sub.name)
        if not sub.name.endswith("mlp") or len(nums) != 1:
            raise CheckpointError(
                f"{sub}: hookpoint {sub.name!r} is not one MLP module ('layers.<i>.mlp'); only MLP "
                "transcoders fit a replacement model",
                path=str(sub),
            )
        if not cfg.get("transcode", False):
            raise CheckpointError(
                f"{cfg_path}: transcode is false: this is a sparse autoencoder, not a transcoder", path=str(cfg_path)
            )
        if cfg.get("activation", "topk") != "topk":
            raise CheckpointError(
                f"{cfg_path}: activation {cfg.get('activation')!r} is not supported (only topk)", path=str(cfg_path)
            )
        l = int(nums[0])
        if l in found:
            raise CheckpointError(f"{sub}: layer {l} also in {found[l][0]}", path=str(sub))
        found[l] = (sub, {**cfg, "_path": str(cfg_path)})
    missing = [i for i in range(max(found) + 1) if i not in found]
    if missing:
        raise CheckpointError(
            f"{folder}: no hookpoint folder for layer {missing[0]} (found {sorted(found)})", path=str(folder)
        )
    return [found[i] for i in range(len(found))]


def _sparsify_dims(layers: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    """F, d, k, skip and cross-layer-ness, which every hookpoint must share."""
    dims = []
    for _, cfg in layers:
        d = int(cfg["d_in"]) if "d_in" in cfg else None
        if d is None or "k" not in cfg:
            raise CheckpointError(f"{cfg['_path']}: missing 'd_in' or 'k'", path=cfg["_path"])
        F = int(cfg.get("num_latents") or 0) or d * int(cfg.get("expansion_factor", 32))
        dims.append(
            {
                "F": F,
                "d": d,
                "k": int(cfg["k"]),
                "skip": bool(cfg.get("skip_connection", False)),
                "cross": int(cfg.get("n_targets", 0)) > 0,
                "norm": bool(cfg.get("normalize_io", False)),
            }
        )
    for (_, cfg), dm in zip(layers, dims):
        if dm != dims[0]:
            raise CheckpointError(f"{cfg['_path']}: {dm} differs from layer 0's {dims[0]}", path=cfg["_path"])
    if dims[0]["cross"] and dims[0]["norm"]:
        raise CheckpointError(
            f"{layers[0][1]['_path']}: cross-layer with normalize_io is not supported", path=layers[0][1]["_path"]
        )
    return dims[0]


def _refuse_nonzero(f: _File, key: str, neutral: float, why: str) -> None:
    if f.has(key) and not torch.all(f.get(key) == neutral):
        raise CheckpointError(
            f"{f.path}: tensor {key!r} is not {neutral:g}: {why} is not supported", path=str(f.path), tensor=key
        )


def _sparsify_io_scales(f: _File, cfg: dict[str, Any], d: int) -> tuple[float, float]:
    """normalize_io scales x by √d / in_norm and the output by out_norm / √d; both fold into the
    weights (returns (c_in, c_out), (1, 1) without normalize_io)."""
    if not cfg.get("normalize_io", False):
        return 1.0, 1.0
    in_norm, out_norm = float(f.get("in_norm").reshape(-1)[0]), float(f.get("out_norm").reshape(-1)[0])
    return d**0.5 / in_norm, out_norm / d**0.5


def _sparsify_layer(
    tc: Transcoder, l: int, f: _File, cfg: dict[str, Any], lazy: bool
) -> SafetensorsDecoderSource | None:
    """Fill layer l from one hookpoint's sae.safetensors; returns its lazy decoder source, if any."""
    F, d, L = tc.d_features, tc.d_model, tc.n_layers
    for key in ("post_enc", *(f"post_encs.{j}" for j in range(L))):
        _refuse_nonzero(f, key, 0.0, "a post-encoder bias (added to the chosen latents)")
    for key in ("post_enc_scale", *(f"post_enc_scales.{j}" for j in range(L))):
        _refuse_nonzero(f, key, 1.0, "a post-encoder scale")
    c_in, c_out = _sparsify_io_scales(f, cfg, d)
    tc.W_enc[l].copy_(f.get("encoder.weight", (F, d)) * c_in)
    tc.b_enc[l].copy_(f.get("encoder.bias", (F,)))
    if not tc.is_cross_layer:
        tc.b_dec[l].copy_(f.get("b_dec", (d,)) * c_out)
        if tc.W_skip is not None:
            tc.W_skip[l].copy_(f.get("W_skip", (d, d)) * (c_in * c_out))  # x W_skipᵀ, like ours
        if lazy and c_out == 1.0:  # a scaled decoder (normalize_io) is read into memory instead
            _check_shape(f.path, "W_dec", f.shape("W_dec"), (F, d))
            src = SafetensorsDecoderSource(str(f.path), "W_dec", (F, d), unsqueeze=True)
            tc.set_lazy_decoder(l, src)
            return src
        tc.W_dec[l] = torch.nn.Parameter((f.get("W_dec", (F, d)) * c_out).unsqueeze(1).to(tc.device, tc.dtype))
        return None
    # clt-training multi-target coder: target j of source l is layer l + j; the outputs of every
    # source writing to a layer add up, so their b_decs add up into that layer's bias.
    n_t = int(cfg["n_targets"])
    if n_t > L - l:
        raise CheckpointError(
            f"{cfg['_path']}: n_targets = {n_t} but only {L - l} layers follow layer {l}", path=cfg["_path"]
        )
    w = torch.zeros(F, L - l, d, dtype=tc.dtype)
    for j in range(n_t):
        w[:, j] = f.get(f"W_decs.{j}", (F, d))
        tc.b_dec[l + j] += f.get(f"b_decs.{j}", (d,)).to(tc.dtype)
        if j > 0:
            _refuse_nonzero(f, f"W_skips.{j}", 0.0, "a skip connection from one layer to a later one")
    if tc.W_skip is not None:
        tc.W_skip[l].copy_(f.get("W_skips.0", (d, d)))
    tc.W_dec[l] = torch.nn.Parameter(w.to(tc.device))
    return None


def _load_sparsify(
    folder: Path, name: str, device: Any, dtype: torch.dtype | None, lazy: bool, verify: bool
) -> Transcoder:
    """EleutherAI sparsify (one TopK transcoder per `<hookpoint>/`) or its clt-training branch
    (`n_targets` > 0: W_decs.{j}, b_decs.{j}, W_skips.{j} per target). Encode is
    TopK(ReLU(x Wᵀ + b)), which equals our TopK; hooks are the MLP's input and output."""
    layers = _sparsify_layers(folder)
    dm = _sparsify_dims(layers)
    with _File(layers[0][0] / SPARSIFY_WEIGHTS) as f0:
        file_dtype = f0.f.get_slice("encoder.weight").get_dtype() if f0.has("encoder.weight") else None
    cfg = {
        "feature_input_hook": "mlp.hook_in",
        "feature_output_hook": "mlp.hook_out",
        "activation": "topk",
        "k": dm["k"],
        "_path": layers[0][1]["_path"],
    }
    dims = _Dims(len(layers), dm["F"], dm["d"], dm["cross"], dm["skip"], has_threshold=False)
    tc = _new(cfg, dims, name=name, device=device, dtype=dtype or _torch_dtype(file_dtype) or torch.float32)
    with torch.no_grad():
        for l, (sub, lcfg) in enumerate(layers):
            with _File(sub / SPARSIFY_WEIGHTS) as f:
                src = _sparsify_layer(tc, l, f, lcfg, lazy)
            if verify and src is not None:
                _scan_lazy(src, dm["F"])
    return tc


# ====================================================================== hub
def _hub_error(ref: str, e: Exception, cache_only: bool) -> CheckpointError:
    if cache_only:  # offline or unreachable: one line, no retries were made
        return CheckpointError(
            unavailable_message(
                "transcoders", ref, "a directory in the circuit-tracer layout (it is not a local directory either)"
            ),
            path=ref,
        )
    return CheckpointError(
        f"{ref!r} is not a local directory and could not be fetched from the Hugging Face hub "
        f"({type(e).__name__}: {e}); check the repo id, your network and (for gated repos) your HF "
        "token. Pass a local directory to load offline.",
        path=ref,
    )


def _download_hf_uri(uri: str) -> str:
    m = re.match(r"^hf://([^/]+/[^/]+)/([^?]+)(?:\?revision=(.+))?$", uri)
    if not m:
        raise CheckpointError(f"invalid hf:// URI {uri!r} (expected hf://owner/repo/path/to/file)", path=uri)
    cache_only = use_local_files_only()
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(
            repo_id=m.group(1), filename=m.group(2), revision=m.group(3), local_files_only=cache_only
        )
    except Exception as e:
        raise _hub_error(uri, e, cache_only) from e


def _snapshot(ref: str) -> Path:
    m = _HUB_ID.match(ref)
    if not m:
        raise CheckpointError(
            f"no such transcoder directory: {ref!r} (and it is not a hub id 'owner/repo[/subfolder][@revision]')",
            path=ref,
        )
    repo_id, sub, revision = m.group(1), (m.group(2) or "").strip("/"), m.group(3)
    prefix = f"{sub}/" if sub else ""
    cache_only = use_local_files_only()
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(
            repo_id,
            revision=revision,
            local_files_only=cache_only,
            allow_patterns=[
                f"{prefix}{CONFIG_NAME}",
                f"{prefix}*.safetensors",
                f"{prefix}*.npz",
                f"{prefix}*/{SPARSIFY_CFG}",
            ],
        )
    except Exception as e:
        raise _hub_error(ref, e, cache_only) from e
    return Path(local) / sub if sub else Path(local)


# ====================================================================== entry point
def load_transcoders(
    path_or_hub_id: str | os.PathLike,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    lazy: bool = True,
    *,
    verify: bool = False,
) -> Transcoder:
    """Load a PLT set or CLT from a local directory or a Hugging Face hub repo.

    `path_or_hub_id`: a directory with config.yaml (or the config.yaml itself), or
    `owner/repo[/subfolder][@revision]` / `hf://owner/repo/...` (downloaded with snapshot_download).
    `dtype`: None keeps the checkpoint's dtype. `lazy`: decoders stay on disk (memory-mapped) and
    are read per layer / per feature when used. Encoders, biases and thresholds are always loaded
    and checked for shape and NaN/inf; lazy decoders have their shapes checked at load and their
    values on every read, or fully at load with `verify=True`.
    Raises `CheckpointError` naming the file and tensor on any problem.
    """
    ref = os.fspath(path_or_hub_id)
    local = Path(ref).expanduser()
    if local.is_file() and local.name == CONFIG_NAME:
        local = local.parent
    if local.is_dir():
        folder, name = local, str(local)
    elif local.exists():
        raise CheckpointError(
            f"{local} is a file; pass the checkpoint directory (containing {CONFIG_NAME})", path=str(local)
        )
    else:
        folder, name = _snapshot(ref), ref
    device = torch.device(device) if device is not None else torch.device("cpu")
    if not (folder / CONFIG_NAME).is_file() and is_sparsify_layout(folder):
        return _load_sparsify(folder, name, device, dtype, lazy, verify)
    cfg = _read_config(folder)
    name = str(cfg.get("name") or name)
    if cfg["model_kind"] == "cross_layer_transcoder":
        load = _load_gs2_clt if _is_gs2_clt(folder, cfg) else _load_clt
    else:
        load = _load_plt_set
    return load(folder, cfg, name, device, dtype, lazy, verify)
