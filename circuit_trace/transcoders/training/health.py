"""Training health checks: per-layer loss spikes during training, and the flags a report carries
(a layer's held-out FVU above 1 means it does worse than predicting the mean; one that mostly
measures outlier tokens training dropped says so, as does one whose MLP output is constant)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class SpikeMonitor:
    """Per-layer batch MSE watched between log steps, without a device sync per step: a layer whose
    worst batch since the last log step exceeds ``ratio`` × its running mean (an exponential mean of
    past interval means) counts as a spike. Spikes before ``warmup`` log intervals are ignored."""

    ratio: float = 10.0
    warmup: int = 5
    spikes: list[dict] = field(default_factory=list)  # {"step", "layer", "ratio"}
    ema: list[float] | None = None
    intervals: int = 0
    _max: torch.Tensor | None = None  # [L]
    _sum: torch.Tensor | None = None  # [L]
    _n: int = 0

    def update(self, mse: torch.Tensor) -> None:
        """``mse [L]``: this batch's mean squared error per layer (stays on its device)."""
        mse = mse.detach().float()
        self._max = mse.clone() if self._max is None else torch.maximum(self._max, mse)
        self._sum = mse.clone() if self._sum is None else self._sum + mse
        self._n += 1

    def flush(self, step: int, layer_ids: list[int]) -> None:
        if self._max is None or self._sum is None or self._n == 0:
            return
        worst, mean = self._max.cpu().tolist(), (self._sum / self._n).cpu().tolist()
        if self.ema is not None and self.intervals >= self.warmup:
            for i, (w, m) in enumerate(zip(worst, self.ema)):
                if m > 0 and w > self.ratio * m:
                    self.spikes.append({"step": step, "layer": layer_ids[i], "ratio": round(w / m, 2)})
        self.ema = mean if self.ema is None else [0.9 * e + 0.1 * m for e, m in zip(self.ema, mean)]
        self.intervals += 1
        self._max = self._sum = None
        self._n = 0

    def state_dict(self) -> dict:
        return {
            "spikes": list(self.spikes),
            "ema": self.ema,
            "intervals": self.intervals,
            "max": self._max.cpu() if self._max is not None else None,
            "sum": self._sum.cpu() if self._sum is not None else None,
            "n": self._n,
        }

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.spikes, self.ema, self.intervals = list(state["spikes"]), state["ema"], int(state["intervals"])
        self._max = state["max"].to(device) if state["max"] is not None else None
        self._sum = state["sum"].to(device) if state["sum"] is not None else None
        self._n = int(state["n"])


def health_flags(
    fvu: list[float],
    layer_ids: list[int],
    spikes: list[dict],
    fvu_without_outliers: list[float] | None = None,
    n_outliers: int = 0,
) -> tuple[list[int], list[str]]:
    """(layers whose held-out FVU > 1, one-line flags for the report and the warning). A layer
    whose FVU more than halves without the ``n_outliers`` held-out tokens the outlier filter drops
    is flagged too: its figure measures those tokens, not the text the transcoder was trained on."""
    # A constant MLP output (an MLP held at 0) has no variance: FVU is inf there, and any write the
    # dictionary makes to it is error. Said apart, since neither outliers nor more steps explain it.
    constant = [l for l, f in zip(layer_ids, fvu) if math.isinf(f)]
    bad = [l for l, f in zip(layer_ids, fvu) if f > 1 and l not in constant]
    flags = []
    if constant:
        flags.append(
            f"the MLP output at layer(s) {constant} is constant on held-out text (an MLP held at 0?): "
            "FVU is undefined (inf) there, and whatever the transcoder writes to it is error"
        )
    if bad:
        worst = max(f for l, f in zip(layer_ids, fvu) if l in bad)
        flags.append(
            f"held-out FVU > 1 (worse than predicting the mean) at layer(s) {bad}, worst {worst:.2f}: "
            "look for outlier tokens (output_outlier_ratio) or train longer"
        )
    if fvu_without_outliers is not None:
        pairs = [(l, f, g) for l, f, g in zip(layer_ids, fvu, fvu_without_outliers) if f > 2 * g]
        if pairs:
            moves = ", ".join(f"{f:.3f} -> {g:.3f}" for _, f, g in pairs)
            flags.append(
                f"held-out FVU at layer(s) {[l for l, _, _ in pairs]} is mostly {n_outliers} outlier token(s) "
                f"that training drops: {moves} without them (fvu_without_outliers)"
            )
    if spikes:
        layers = sorted({s["layer"] for s in spikes})
        flags.append(f"{len(spikes)} loss spike(s) at layer(s) {layers}, up to x{max(s['ratio'] for s in spikes)}")
    return bad, flags
