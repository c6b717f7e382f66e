"""Placing one model across several devices with accelerate (`ct.load(..., device_map=...)`).

Accelerate's hooks move each block's inputs to that block's device, so the model runs as usual;
the package's own tensors follow the embedding's device (`first_device`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

STRATEGIES = ("auto", "balanced", "sequential")


def _auto_map(model: nn.Module, strategy: str, dtype: torch.dtype | None) -> dict:
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = list(getattr(model, "_no_split_modules", None) or [])
    max_memory = (
        None if strategy == "sequential" else get_balanced_memory(model, dtype=dtype, no_split_module_classes=no_split)
    )
    return infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype)


def place_model(model: nn.Module, device_map: str | dict, *, dtype: torch.dtype | None = None) -> nn.Module:
    """Dispatch `model` over devices: `device_map` is "auto" / "balanced" (spread evenly over the
    GPUs, then CPU), "sequential" (fill GPU 0 first), or accelerate's {module name: device} dict.
    Hooks are always attached (`force_hooks`), even when every module lands on one device, so a
    single-device machine runs the same code path as a multi-GPU one."""
    try:
        from accelerate import dispatch_model
    except ImportError as exc:
        raise ImportError("device_map needs accelerate: pip install 'circuit-trace[multi-gpu]'") from exc
    if isinstance(device_map, str):
        if device_map not in STRATEGIES:
            raise ValueError(f"device_map must be one of {', '.join(STRATEGIES)} or a dict, got {device_map!r}")
        device_map = _auto_map(model, device_map, dtype)
    elif not isinstance(device_map, dict):
        raise TypeError(f"device_map must be a string or a dict, got {type(device_map).__name__}")
    if "disk" in device_map.values():
        raise ValueError("the model does not fit the GPUs and CPU memory together (disk offload is not supported)")
    dispatch_model(model, device_map=device_map, force_hooks=True)
    model.hf_device_map = dict(device_map)  # pyright: ignore[reportAttributeAccessIssue, reportArgumentType]  # HF's own attribute, not on nn.Module
    return model


def first_device(model: nn.Module) -> torch.device:
    """Where inputs go: the device of the input embedding (a placed model's first block)."""
    hf: Any = model  # an HF PreTrainedModel
    return hf.get_input_embeddings().weight.device
