"""A short CLT training run on the embedded `states` organism (slow: RUN_SLOW=1, ~2 min on CPU)."""

import os

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.environ.get("RUN_SLOW") != "1", reason="slow: set RUN_SLOW=1")]


def test_organism_clt_short_run(tmp_path):
    from circuit_trace.organisms import ORGANISM_DIR, generate_corpus, load_organism
    from circuit_trace.transcoders import load_transcoders
    from circuit_trace.transcoders.training import TrainConfig, train

    if not (ORGANISM_DIR / "config.json").exists():
        pytest.skip("organism weights not built")
    model, tok = load_organism()
    cfg = TrainConfig(kind="clt", n_features=256, steps=300, out_dir=str(tmp_path / "clt"))
    report = train(model, tok, generate_corpus(seed=123, n_sentences=6000), cfg, progress=False)
    assert report.eval_heldout and report.outlier_tokens_dropped == 0
    assert report.fvu_total < 0.05 and report.l0_total < 150
    # The v4 organism (2026-11-30) is harder for so short a run than the one these bounds were first
    # set on: 0.92 top-1 and 0.20 nats on 2026-12-02 (the shipped 3,072-feature CLT: 0.956 / 0.044).
    assert report.top1_agreement > 0.85 and report.replacement_kl < 0.35
    assert load_transcoders(report.transcoder_path).d_features == 256
