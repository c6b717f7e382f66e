"""Which windows a harvest capped by ``max_tokens`` keeps: spread over the corpus, or its first ones."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from circuit_trace.transcoders.training import ActivationCache, HarvestConfig, harvest
from circuit_trace.transcoders.training.buffer import make_windows, read_corpus
from circuit_trace.transcoders.training.harvest import first_windows, spread_windows


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=300),
    share=st.floats(0.0, 1.2),
)
def test_spread_windows_are_even_within_budget_and_keep_the_end(lengths, share):
    lens = torch.tensor(lengths)
    tokens = (lens - 1).clamp_min(0)
    budget = int(share * int(tokens.sum()))
    idx = spread_windows(lens, budget)
    assert idx.numel() >= 1 and int(idx[-1]) == len(lengths) - 1  # the held-out end is kept
    assert torch.equal(idx, idx.unique())  # ascending, no repeat
    if idx.numel() > 1:
        assert int(tokens[idx].sum()) <= budget
        assert int(idx[0]) == 0
        gaps = idx.diff()
        assert int(gaps.max() - gaps.min()) <= 1  # evenly spaced
    if budget >= int(tokens.sum()):
        assert idx.numel() == len(lengths)  # a budget above the corpus keeps all of it
    first = first_windows(lens, budget)
    assert first.numel() >= 1 and (first.numel() == 1 or int(tokens[first].sum()) <= budget)


def test_spread_windows_use_most_of_the_budget():
    lens = torch.full((1000,), 101)  # 100 tokens each
    for budget in (100, 2_500, 50_000, 99_999):
        idx = spread_windows(lens, budget)
        assert budget - 100 < 100 * idx.numel() <= budget


def test_harvest_caps_tokens_with_spread_windows(tiny, tmp_path):
    model, tok, corpus = tiny
    all_w, all_l = make_windows(tok, read_corpus(corpus), 16, None)
    cap = int((all_l - 1).sum()) // 3
    for spread, pick in ((True, spread_windows), (False, first_windows)):
        out = tmp_path / f"c{spread}"
        cfg = HarvestConfig(out_dir=str(out), context_size=16, max_tokens=cap, spread=spread)
        info = harvest(model, tok, corpus, cfg, progress=False)
        cache = ActivationCache(out)
        keep = pick(all_l, cap)
        assert torch.equal(cache.windows, all_w[keep].to(cache.windows.dtype))
        assert info.n_tokens == int((all_l[keep] - 1).sum()) <= cap
