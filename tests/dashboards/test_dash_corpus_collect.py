"""dashboards.corpus and dashboards.collect: corpus reading, context numbering, and the running
statistics checked against brute force over all activations."""

from __future__ import annotations

import json

import helpers
import pytest
import torch

from circuit_trace.dashboards.collect import LayerStats, StatsOptions
from circuit_trace.dashboards.corpus import CorpusError, context_batches, read_documents


def test_text_and_jsonl_documents(tmp_path):
    (tmp_path / "c.txt").write_text("w1 w2\n\nw3\n")
    assert list(read_documents(tmp_path / "c.txt")) == ["w1 w2", "w3"]
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "w4 w5"}) + "\n" + json.dumps("w6") + "\n")
    assert list(read_documents(tmp_path / "c.jsonl")) == ["w4 w5", "w6"]
    (tmp_path / "bad.jsonl").write_text("{nope\n")
    with pytest.raises(CorpusError, match="bad.jsonl:1"):
        list(read_documents(tmp_path / "bad.jsonl"))
    (tmp_path / "nofield.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(CorpusError, match="'text'"):
        list(read_documents(tmp_path / "nofield.jsonl"))


def test_missing_file_and_offline_hub_fail_fast(tmp_path, monkeypatch):
    with pytest.raises(CorpusError, match="does not exist"):
        list(read_documents(tmp_path / "missing.txt"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CorpusError, match="offline"):
        list(read_documents("someone/some-dataset"))


def test_contexts_are_numbered_split_and_resumable():
    tok = helpers.tokenizer()  # BOS "<bos>" = 0 starts every context
    docs = ["w1 w2 w3 w4 w5", "w6", "w7 w8"]
    batches = list(context_batches(tok, docs, ctx_len=3, batch_size=2))
    rows = [r[m].tolist() for b in batches for r, m in zip(b.ids, b.mask)]
    ids = [tok.convert_tokens_to_ids(w) for w in ["w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8"]]
    assert rows == [[0, *ids[0:2]], [0, *ids[2:4]], [0, ids[4]], [0, ids[5]], [0, *ids[6:8]]]
    assert [b.first for b in batches] == [0, 2, 4]
    resumed = list(context_batches(tok, docs, ctx_len=3, batch_size=2, skip=1))
    assert resumed[0].first == 1 and resumed[0].ids[0][resumed[0].mask[0]].tolist() == [0, *ids[2:4]]


def _random_stream(seed: int, n_batches: int, B: int, P: int, F: int):
    g = torch.Generator().manual_seed(seed)
    for b in range(n_batches):
        acts = torch.relu(torch.randn(B, P, F, generator=g) - 1.0)  # sparse, nonnegative
        mask = torch.rand(B, P, generator=g) > 0.2
        yield b * B, acts, mask


def test_running_stats_match_brute_force():
    F, P, B, K = 7, 5, 4, 3
    opts = StatsOptions(top_k=K, n_samples=4, n_bins=12, log10_min=-3, log10_max=1)
    s = LayerStats(F, P, opts)
    all_acts, all_masks = [], []
    for first, acts, mask in _random_stream(0, 6, B, P, F):
        s.update(acts, mask, first)
        all_acts.append(acts * mask[..., None])
        all_masks.append(mask)
    acts = torch.cat(all_acts)  # [N, P, F]
    ctx_max = acts.amax(1)  # [N, F]
    top_v, top_i = ctx_max.T.topk(K, dim=1)
    assert torch.allclose(s.top_val.clamp_min(0).sort(1, descending=True).values, top_v)  # slots unordered
    for f in range(F):  # per-token activations stored for the kept contexts (fp16)
        for k in range(K):
            if s.top_val[f, k] > 0:
                c = int(s.top_ctx[f, k])
                assert torch.allclose(s.top_acts[f, k].float(), acts[c, :, f], atol=2e-3, rtol=1e-3)
    active = acts > 0
    assert torch.equal(s.n_active, active.sum((0, 1)))
    assert int(s.n_tokens) == int(torch.cat(all_masks).sum())
    assert torch.equal(s.hist.sum(1), s.n_active)  # every active activation lands in one bin
    # the sample holds only contexts where the feature is active, each at most once
    for f in range(F):
        kept = s.smp_ctx[f][s.smp_key[f] >= 0].tolist()
        assert len(kept) == len(set(kept)) == min(4, int((ctx_max[:, f] > 0).sum()))
        assert all(ctx_max[c, f] > 0 for c in kept)


def test_state_round_trip_resumes_exactly():
    F, P, B = 6, 4, 3
    opts = StatsOptions(top_k=2, n_samples=3)
    stream = list(_random_stream(1, 5, B, P, F))
    whole = LayerStats(F, P, opts)
    for first, acts, mask in stream:
        whole.update(acts, mask, first)
    part = LayerStats(F, P, opts)
    for first, acts, mask in stream[:2]:
        part.update(acts, mask, first)
    resumed = LayerStats(F, P, opts)
    resumed.load_state_dict(part.state_dict())
    for first, acts, mask in stream[2:]:
        resumed.update(acts, mask, first)
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
