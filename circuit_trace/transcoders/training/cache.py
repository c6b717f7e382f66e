"""Activation cache: MLP inputs and outputs harvested once, then read back at memory speed by any
number of training runs.

Layout of a cache directory (no pickle; every array is a ``.npy`` file, read by rows):
    cache.json              metadata (`CacheInfo`): model, hooks, layers, dtype, tokens, corpus
                            fingerprint, shard list, ``complete``
    windows.npy, lengths.npy  the token windows ``[N, P]`` (int32) and their lengths ``[N]``
    shard_00000.x.npy       MLP inputs ``[rows, n_layers_cached, d]`` (bf16 stored as int16 bits,
    shard_00000.y.npy       or fp16 / fp32), outputs the same
    shard_00000.norms.npy   fp32 ``[rows, 2, n_layers_cached]``: input / output norm per layer, taken
                            before the cast, so outlier filtering reads no activations
A row is one token: the windows' tokens in window order, position 0 (BOS) and padding left out.
Each shard is a run of whole windows, written under a temporary name and renamed when complete, so
a harvest interrupted at any point resumes by skipping the shards already on disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...atomic import atomic_write_text
from .chunks import ChunkedStream, OutlierCounts, content_mask, outlier_mask

CACHE_FORMAT = 1
META_NAME = "cache.json"
DISK_DTYPES = {"bfloat16": np.int16, "float16": np.float16, "float32": np.float32}  # bf16 kept as its bits


class CacheError(ValueError):
    """The activation cache is missing, incomplete or does not match the request."""


@dataclass
class CacheInfo:
    """The metadata of an activation cache (``cache.json``)."""

    model: str
    input_hook: str
    output_hook: str
    layers: list[int]  # model layers stored, in order
    n_model_layers: int
    d_model: int
    dtype: str  # on-disk dtype: bfloat16 | float16 | float32
    context_size: int
    n_windows: int
    n_tokens: int  # rows over all shards
    corpus_fingerprint: str  # sha256 of the windows and lengths (corpus + tokenizer + windowing)
    shards: list[dict] = field(default_factory=list)  # {"name", "windows": [lo, hi], "rows": [lo, hi]}
    complete: bool = False
    format: int = CACHE_FORMAT
    model_revision: str | None = None  # the hub commit the weights came from, when transformers knows it
    model_hash: str | None = None  # `weights_hash` of the model (None: a cache from before it was recorded)
    # boundary tokens (BOS, packing separator) that training and evaluation skip; [] in caches from before
    skip_token_ids: list[int] = field(default_factory=list)

    def save(self, directory: Path) -> None:
        atomic_write_text(directory / META_NAME, json.dumps(dataclasses.asdict(self), indent=1))

    @classmethod
    def load(cls, directory: Path) -> CacheInfo:
        path = directory / META_NAME
        if not path.is_file():
            raise CacheError(f"{directory} is not an activation cache (no {META_NAME}); run `circuit-trace harvest`")
        try:
            info = cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:  # not JSON, or not the fields of a CacheInfo
            raise CacheError(f"{path} is corrupt (not an activation cache's metadata: {exc})") from exc
        if info.format != CACHE_FORMAT:
            raise CacheError(f"{path}: cache format {info.format}, this version reads format {CACHE_FORMAT}")
        return info

    def same_request(self, other: CacheInfo) -> list[str]:
        """Fields in which ``other`` (a new harvest request) differs from this cache."""
        keys = ("model", "input_hook", "output_hook", "layers", "dtype", "context_size", "corpus_fingerprint")
        diff = [k for k in keys if getattr(self, k) != getattr(other, k)]
        if self.model_hash and other.model_hash and self.model_hash != other.model_hash:
            diff.append("model weights")
        return diff

    def describe(self) -> str:
        """One line: the model (and its weights' hash), layers, d_model, hooks and tokens held."""
        weights = f", weights {self.model_hash[:12]}" if self.model_hash else ""
        revision = f", revision {self.model_revision}" if self.model_revision else ""
        lo, hi = self.layers[0], self.layers[-1]
        layers = f"{lo}-{hi}" if self.layers == list(range(lo, hi + 1)) else ",".join(map(str, self.layers))
        return (
            f"model {self.model or '(unnamed)'}{revision}{weights}; layers {layers} of {self.n_model_layers}, "
            f"d_model {self.d_model}, {self.input_hook} -> {self.output_hook}, {self.n_tokens} tokens, {self.dtype}"
        )


def weights_hash(model) -> str:
    """sha256 of a model's parameters (names, shapes, values rounded to bf16): the same weights loaded
    in float32, bfloat16 or from a GGUF's cached copy hash alike; other weights differ."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            h.update(f"{name}:{tuple(p.shape)};".encode())
            h.update(p.detach().to("cpu", torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes())
    return h.hexdigest()


def check_model(info: CacheInfo, model, where: str | os.PathLike) -> None:
    """Raise `CacheError` unless ``model`` is the model the cache at ``where`` was harvested from: the
    same weights (`weights_hash`), or for a cache that predates the hash, the same name and shape."""
    from ...models import get_adapter

    adapter = get_adapter(model)
    name = str(getattr(model.config, "_name_or_path", "") or "") or "the given model"
    shape = (adapter.n_layers, adapter.d_model)
    if shape != (info.n_model_layers, info.d_model):
        raise CacheError(
            f"cache {where} was harvested from another model ({info.model}: {info.n_model_layers} layers, "
            f"d_model {info.d_model}), not {name} ({shape[0]} layers, d_model {shape[1]})"
        )
    if info.model_hash is None:
        if info.model and name != info.model:
            raise CacheError(f"cache {where} was harvested from another model ({info.model}), not {name}")
        return
    have = weights_hash(model)
    if have != info.model_hash:
        raise CacheError(
            f"cache {where} was harvested from another model ({info.model}, weights {info.model_hash[:12]}): "
            f"{name} has other weights ({have[:12]})"
        )


def fingerprint(windows: torch.Tensor, lengths: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(str(tuple(windows.shape)).encode())
    h.update(windows.to(torch.int64).contiguous().numpy().tobytes())
    h.update(lengths.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


def row_starts(lengths: torch.Tensor) -> torch.Tensor:
    """``[N + 1]`` first row of each window (a window of length n holds n - 1 rows)."""
    return torch.cat([torch.zeros(1, dtype=torch.long), (lengths.long() - 1).clamp_min(0).cumsum(0)])


def plan_shards(lengths: torch.Tensor, shard_tokens: int) -> list[dict]:
    """Runs of whole windows holding about ``shard_tokens`` rows each."""
    starts = row_starts(lengths)
    shards, lo = [], 0
    n = lengths.shape[0]
    while lo < n:
        hi = int(torch.searchsorted(starts, starts[lo] + shard_tokens, right=True)) - 1
        hi = min(n, max(hi, lo + 1))
        shards.append(
            {"name": f"shard_{len(shards):05d}", "windows": [lo, hi], "rows": [int(starts[lo]), int(starts[hi])]}
        )
        lo = hi
    return shards


def to_disk(t: torch.Tensor, dtype: str) -> np.ndarray:
    t = t.to(getattr(torch, dtype)).contiguous()
    return (t.view(torch.int16) if dtype == "bfloat16" else t).numpy()


def shard_done(directory: Path, name: str) -> bool:
    return all((directory / f"{name}.{part}.npy").is_file() for part in ("x", "y", "norms"))


class ActivationCache:
    """A complete cache directory opened for reading (rows read on demand with explicit reads)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.info = CacheInfo.load(self.path)
        if not self.info.complete:
            raise CacheError(f"activation cache {self.path} is incomplete: run the same harvest again to finish it")
        self.windows, self.lengths = self._read_windows()
        self.starts = row_starts(self.lengths)
        self._offsets: dict[tuple[int, str], int] = {}  # (shard, "x" | "y" | "norms") -> bytes before row 0
        self._check_shards()
        self.shard_rows = torch.tensor([s["rows"][0] for s in self.info.shards] + [self.info.n_tokens])

    def _corrupt(self, what: str) -> CacheError:
        return CacheError(f"activation cache {self.path} is corrupt: {what}; harvest it again into a new directory")

    def _read_windows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The windows ``[N, P]`` and lengths ``[N]``, checked against the metadata's shape and fingerprint."""
        try:
            windows = torch.from_numpy(np.load(self.path / "windows.npy")).long()
            lengths = torch.from_numpy(np.load(self.path / "lengths.npy")).long()
        except (OSError, ValueError) as exc:  # missing, truncated, or not an .npy file
            raise self._corrupt(f"cannot read its windows ({exc})") from exc
        info = self.info
        if tuple(windows.shape) != (info.n_windows, info.context_size) or tuple(lengths.shape) != (info.n_windows,):
            raise self._corrupt(f"windows {list(windows.shape)}, metadata says [{info.n_windows}, {info.context_size}]")
        if fingerprint(windows, lengths) != info.corpus_fingerprint:
            raise self._corrupt("its windows do not match the fingerprint in cache.json")
        return windows, lengths

    def _check_shards(self) -> None:
        """Every shard's three files present, readable and of the shape and dtype the metadata says,
        the shards covering the windows and rows in order (reads only the .npy headers); records
        where each file's rows start."""
        info, at = self.info, 0
        L, d = len(info.layers), info.d_model
        for i, shard in enumerate(info.shards):
            try:
                name, (w0, w1), (r0, r1) = str(shard["name"]), shard["windows"], shard["rows"]
                expected = [int(self.starts[w0]), int(self.starts[w1])]
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                raise self._corrupt(f"a shard entry in cache.json is malformed ({shard!r})") from exc
            if r0 != at or [r0, r1] != expected:
                raise self._corrupt(f"{name} holds rows {[r0, r1]}, its windows say {expected} (from row {at})")
            for part, shape, dtype in (
                ("x", (r1 - r0, L, d), DISK_DTYPES[info.dtype]),
                ("y", (r1 - r0, L, d), DISK_DTYPES[info.dtype]),
                ("norms", (r1 - r0, 2, L), np.float32),
            ):
                self._offsets[i, part] = self._check_part(f"{name}.{part}.npy", shape, dtype)
            at = r1
        if at != info.n_tokens:
            raise self._corrupt(f"its shards hold {at} rows, the metadata says {info.n_tokens} tokens")

    def _check_part(self, file: str, shape: tuple[int, ...], dtype) -> int:
        """The byte offset of row 0 in ``file``, once its shape, dtype and row order are checked."""
        try:
            a = np.load(self.path / file, mmap_mode="r")
        except (OSError, ValueError) as exc:  # missing or truncated
            raise self._corrupt(f"cannot read {file} ({exc})") from exc
        if a.shape != shape or a.dtype != np.dtype(dtype) or not a.flags.c_contiguous:
            order = "" if a.flags.c_contiguous else " in Fortran order"
            raise self._corrupt(f"{file} is {a.dtype} {list(a.shape)}{order}, expected {list(shape)}")
        return int(a.offset)

    def _file(self, shard: int, part: str) -> Path:
        return self.path / f"{self.info.shards[shard]['name']}.{part}.npy"

    def rows_of(self, windows: torch.Tensor, skip_token_ids: list[int] | tuple[int, ...] = ()) -> torch.Tensor:
        """Row indices of the tokens of ``windows`` (indices into the cache's windows), in order:
        every position but the first and the padding, less the tokens ``skip_token_ids``."""
        ids = self.windows[windows]  # [n, P]; position p >= 1 of window w is row starts[w] + p - 1
        keep = content_mask(ids, self.lengths[windows], skip_token_ids)
        return (self.starts[windows, None] + torch.arange(ids.shape[1]) - 1)[keep]

    def content_rows(self, windows: torch.Tensor) -> torch.Tensor:
        """The rows of ``windows`` that training and evaluation read: `rows_of` less the boundary
        tokens recorded at harvest."""
        return self.rows_of(windows, self.info.skip_token_ids)

    def _runs(self, rows: torch.Tensor) -> list[tuple[int, int, int, int]]:
        """Sorted ``rows`` as runs of consecutive rows inside one shard: (shard, its first row in
        the shard, first and end position in ``rows``)."""
        which = torch.searchsorted(self.shard_rows, rows, right=True) - 1
        breaks = ((rows.diff() != 1) | (which.diff() != 0)).nonzero().flatten() + 1
        bounds = [0, *breaks.tolist(), rows.shape[0]]
        shard_of, local = which.tolist(), (rows - self.shard_rows[which]).tolist()
        return [(shard_of[lo], local[lo], lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]

    def _plan(self, rows: torch.Tensor) -> tuple[torch.Tensor | None, list[tuple[int, int, int, int]]]:
        """How to read ``rows``: their sorting order (None when already sorted) and `_runs` of the
        sorted rows, computed once for every part read."""
        if rows.numel() == 0:
            return None, []
        order = torch.argsort(rows)
        if torch.equal(order, torch.arange(rows.shape[0])):
            return None, self._runs(rows)
        return order, self._runs(rows[order])

    def _read(self, part: str, plan: tuple[torch.Tensor | None, list], out: torch.Tensor) -> torch.Tensor:
        """Fill ``out [n, ...]`` (contiguous) with the rows of ``part`` ("x", "y", "norms") planned by
        `_plan`, each run of consecutive rows in one explicit read, in file order. Why not the memory
        maps: a page fault reads ``read_ahead_kb`` around it (8 MB on common VMs) and a read of a file
        larger than the page cache then pulls several times the bytes a chunk needs, at one kernel
        fault per 4 KB page on the cores training uses."""
        order, runs = plan
        if not runs:
            return out
        sorted_out = out if order is None else torch.empty_like(out)
        dest = sorted_out.view(out.shape[0], -1).view(torch.uint8).numpy()  # [n, row bytes]
        row_bytes, files = dest.shape[1], {}
        try:
            for shard, first, lo, hi in runs:
                if shard not in files:
                    files[shard] = open(self._file(shard, part), "rb", buffering=0)  # noqa: SIM115 (closed below)
                    if hasattr(os, "posix_fadvise"):  # read what is asked, no read-ahead past a run's end
                        os.posix_fadvise(files[shard].fileno(), 0, 0, os.POSIX_FADV_RANDOM)
                at = self._offsets[shard, part] + first * row_bytes
                self._read_exactly(files[shard], at, dest[lo:hi].data.cast("B"), part)
        finally:
            for f in files.values():
                f.close()
        if order is not None:
            out[order] = sorted_out
        return out

    def _read_exactly(self, f, at: int, view: memoryview, part: str) -> None:
        f.seek(at)
        while view.nbytes:
            n = f.readinto(view)
            if not n:
                raise self._corrupt(f"{Path(f.name).name} ends before the rows its metadata lists ({part})")
            view = view[n:]

    def norms(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input and output norms ``[n, n_layers_cached]`` of ``rows``."""
        out = self._read("norms", self._plan(rows), torch.empty(rows.shape[0], 2, len(self.info.layers)))
        return out[:, 0], out[:, 1]

    def empty_rows(self, n: int, layer_pos: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Uninitialised (x, y) ``[n, L, d]`` in the cache dtype, for `gather` to fill."""
        n_l = len(self.info.layers) if layer_pos is None else layer_pos.shape[0]
        dt = getattr(torch, self.info.dtype)
        return torch.empty(n, n_l, self.info.d_model, dtype=dt), torch.empty(n, n_l, self.info.d_model, dtype=dt)

    def gather(
        self,
        rows: torch.Tensor,
        layer_pos: torch.Tensor | None = None,
        out: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) ``[n, L, d]`` in the cache dtype for ``rows`` (layers: positions among the cached
        ones). ``out``: tensors from `empty_rows` with at least n rows; their first n are filled and
        returned, so a stream that reuses them allocates (and the kernel zero-fills) nothing."""
        n = rows.shape[0]
        x, y = (out[0][:n], out[1][:n]) if out is not None and layer_pos is None else self.empty_rows(n)
        plan = self._plan(rows)
        self._read("x", plan, x)
        self._read("y", plan, y)
        if layer_pos is None:
            return x, y
        if out is None:
            return x[:, layer_pos], y[:, layer_pos]
        return torch.index_select(x, 1, layer_pos, out=out[0][:n]), torch.index_select(y, 1, layer_pos, out=out[1][:n])

    def layer_positions(self, layers: list[int]) -> torch.Tensor | None:
        """Positions of model ``layers`` among the cached layers (None: exactly the cached ones)."""
        if layers == self.info.layers:
            return None
        missing = [l for l in layers if l not in self.info.layers]
        if missing:
            raise CacheError(f"activation cache {self.path} has no layer {missing[0]} (it holds {self.info.layers})")
        return torch.tensor([self.info.layers.index(l) for l in layers])


@dataclass
class ChunkData:
    """One chunk of a `CacheBuffer` in memory: this rank's tokens of the chunk's full batches."""

    n_kept: int  # tokens of the whole chunk after outlier filtering
    counts: OutlierCounts
    x: torch.Tensor  # [m, L, d] in disk order (each run of consecutive rows is one read)
    y: torch.Tensor
    where: torch.Tensor  # [m]: row of x / y holding this rank's j-th token in batch order
    buffers: tuple[torch.Tensor, torch.Tensor]  # what x and y are views of, reused for a later chunk


class CacheBuffer(ChunkedStream):
    """The training stream of `buffer.ActivationBuffer`, read from an `ActivationCache`: for the same
    windows, seed and chunking it yields the same batches, without running the model.

    A chunk is read into memory whole (this rank's rows only, in disk order), and with ``prefetch``
    the next chunk is read on a background thread while the current one trains: a cache larger
    than the page cache is then read once, front to back, instead of row by row as batches ask."""

    def __init__(
        self,
        cache: ActivationCache,
        windows: torch.Tensor,
        *,
        batch_size: int,
        seed: int = 0,
        windows_per_chunk: int = 64,
        outlier_ratio: float | None = 10.0,
        output_outlier_ratio: float | None = None,
        layers: list[int] | None = None,
        device: str | torch.device = "cpu",
        rank: int = 0,
        world_size: int = 1,
        prefetch: bool = True,
    ):
        from .buffer import CorpusError

        self.cache, self.train_windows = cache, windows
        usable = int(cache.content_rows(windows).numel())
        if usable < batch_size:
            raise CorpusError(f"corpus too short: {usable} cached tokens, fewer than one batch ({batch_size} tokens)")
        self.batch_size, self.seed, self.n_windows = batch_size, seed, windows.shape[0]
        self.windows_per_chunk = max(1, min(windows_per_chunk, self.n_windows))
        self.outlier_ratio, self.output_outlier_ratio = outlier_ratio, output_outlier_ratio
        self.layer_pos = cache.layer_positions(layers if layers is not None else cache.info.layers)
        self.device = torch.device(device)
        self._current: tuple[tuple[int, int], ChunkData] | None = None
        self._next: tuple[tuple[int, int], Future[ChunkData]] | None = None
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-prefetch") if prefetch else None
        self._init_stream(rank=rank, world_size=world_size)

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._current = self._next = None

    def _chunk_rows(self, epoch: int, chunk: int) -> tuple[torch.Tensor, OutlierCounts]:
        """The chunk's rows after outlier filtering, shuffled, and the outlier counts."""
        rows = self.cache.content_rows(self.train_windows[self.chunk_windows(epoch, chunk)])
        keep, counts = outlier_mask(*self.cache.norms(rows), self.outlier_ratio, self.output_outlier_ratio)
        rows = rows[keep]
        return rows[self.chunk_permutation(epoch, chunk, rows.shape[0])], counts

    def _read_chunk(self, epoch: int, chunk: int, spare: tuple[torch.Tensor, torch.Tensor] | None) -> ChunkData:
        """Read into ``spare`` (a finished chunk's buffers) when large enough: a fresh allocation
        this size is served by new pages the kernel must zero-fill (a prefetch thread's always are,
        from glibc's per-thread arena), a third of a core-second per chunk."""
        rows, counts = self._chunk_rows(epoch, chunk)
        part = self.batch_size // self.world_size
        n_batches = rows.shape[0] // self.batch_size
        mine = rows[: n_batches * self.batch_size].view(n_batches, self.world_size, part)[:, self.rank].reshape(-1)
        order = torch.argsort(mine)
        if spare is None or spare[0].shape[0] < mine.shape[0]:
            spare = self.cache.empty_rows(mine.shape[0], self.layer_pos)
        x, y = self.cache.gather(mine[order], self.layer_pos, out=spare)
        where = torch.empty_like(order)
        where[order] = torch.arange(order.shape[0])
        return ChunkData(rows.shape[0], counts, x, y, where, spare)

    def _chunk(self, epoch: int, chunk: int) -> ChunkData:
        key = (epoch, chunk)
        if self._current is None or self._current[0] != key:
            spare = None if self._current is None else self._current[1].buffers  # its batches were copied out
            pending = self._next
            if pending is not None and pending[0] == key:
                data = pending[1].result()
            else:
                data, spare = self._read_chunk(*key, spare), None
            self._current, self._next = (key, data), None
            if self._reader is not None:
                after = (epoch, chunk + 1) if chunk + 1 < self.chunks_per_epoch else (epoch + 1, 0)
                self._next = (after, self._reader.submit(self._read_chunk, *after, spare))
        return self._current[1]

    def _load_chunk(self, epoch: int, chunk: int) -> tuple[int, OutlierCounts]:
        data = self._chunk(epoch, chunk)
        return data.n_kept, data.counts

    def _batch(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        """In the cache's dtype: the trainer's normalisation converts in the pass that scales."""
        data = self._chunk(self.epoch, self.chunk)
        j = lo // self.batch_size * (hi - lo)  # this rank's tokens before this batch
        at = data.where[j : j + hi - lo]
        return data.x[at].to(self.device), data.y[at].to(self.device)

    def first_tokens(self, n_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Up to ``n_tokens`` tokens of the first chunk of epoch 0 (float32), without moving the stream."""
        x, y = self.cache.gather(self._chunk_rows(0, 0)[0][:n_tokens], self.layer_pos)
        return x.float(), y.float()
