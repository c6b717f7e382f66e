import json

import pytest
import torch
from training_fixtures import make_tokenizer

from circuit_trace.transcoders.training import (
    ActivationBuffer,
    CorpusError,
    make_windows,
    read_corpus,
    tokenize_windows,
)


def fake_read(ids):
    """x, y [L=2, B, P, d=3] that encode the token id and position, so batches can be traced."""
    B, P = ids.shape
    pos = torch.arange(P).expand(B, P)
    x = torch.stack([ids.float(), pos.float(), torch.ones(B, P)], -1)
    return torch.stack([x, 2 * x]), torch.stack([-x, 3 * x])


def windows(n=20, P=9):
    return torch.arange(n * P).view(n, P) + 1


def drain(buf, n):
    return [next(buf) for _ in range(n)]


def test_deterministic_bos_dropped_and_shape():
    a = ActivationBuffer(windows(), fake_read, batch_size=16, seed=5, windows_per_chunk=4, forward_batch_size=3)
    b = ActivationBuffer(windows(), fake_read, batch_size=16, seed=5, windows_per_chunk=4, forward_batch_size=3)
    xa, ya = zip(*drain(a, 30))
    xb, yb = zip(*drain(b, 30))
    assert all(torch.equal(p, q) for p, q in zip(xa + ya, xb + yb))
    assert xa[0].shape == (16, 2, 3) and ya[0].shape == (16, 2, 3)
    x = torch.cat(xa)
    assert (x[:, 0, 1] > 0).all()  # position 0 never appears
    assert torch.equal(ya[0][:, 0], -xa[0][:, 0])  # x and y rows stay paired
    c = ActivationBuffer(windows(), fake_read, batch_size=16, seed=6, windows_per_chunk=4)
    assert not torch.equal(next(c)[0], xa[0])
    # one epoch = 20 windows * 8 tokens = 160 tokens = 5 chunks of 32 tokens = 10 batches
    ids = torch.cat(xa[:10])[:, 0, 0].long()
    assert len(set(ids.tolist())) == 160


def test_state_resume_is_exact():
    a = ActivationBuffer(windows(), fake_read, batch_size=16, seed=1, windows_per_chunk=4)
    drain(a, 7)
    state = json.loads(json.dumps(a.state_dict()))  # plain ints: JSON/torch.save safe
    rest = drain(a, 9)
    b = ActivationBuffer(windows(), fake_read, batch_size=16, seed=1, windows_per_chunk=4)
    b.load_state_dict(state)
    for (x1, y1), (x2, y2) in zip(rest, drain(b, 9)):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_outliers_dropped():
    def read(ids):
        x, y = fake_read(ids)
        x = torch.ones_like(x)
        x[:, ids == 50] *= 100  # one token with a huge input norm
        y = torch.ones_like(y)
        y[:, ids == 60] *= 100  # large outputs are kept
        return x, y

    buf = ActivationBuffer(windows(), read, batch_size=8, seed=0, windows_per_chunk=20)
    xs, ys = zip(*[next(buf) for _ in range(19)])  # 19 * 8 = 152 < 160 - 1
    assert buf.n_dropped == 1 and torch.cat(xs).abs().max() == 1 and torch.cat(ys).abs().max() == 100


def test_corpus_sources(tmp_path):
    (tmp_path / "a.txt").write_text("the capital of texas\n\nis austin")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.jsonl").write_text('{"text": "ohio"}\n{"text": "  "}\n')
    (tmp_path / "skip.bin").write_text("not text")
    assert read_corpus(tmp_path) == ["the capital of texas", "is austin", "ohio"]
    assert read_corpus(tmp_path / "a.txt") == ["the capital of texas", "is austin"]
    assert read_corpus(iter(["x", " ", "y"])) == ["x", "y"]
    (tmp_path / "lines.md").write_text("one fact.\ntwo facts.\n")  # no blank line: one doc per line
    assert read_corpus(tmp_path / "lines.md") == ["one fact.", "two facts."]
    for bad in ([], ["", "  "], tmp_path / "missing"):
        with pytest.raises(CorpusError):
            read_corpus(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no .txt"):
        read_corpus(tmp_path / "empty")


def test_tokenize_windows_and_short_corpus():
    tok = make_tokenizer()
    w = tokenize_windows(tok, ["the capital of texas is austin", "ohio"], context_size=4)
    assert w.shape == (3, 4) and (w[:, 0] == tok.bos_token_id).all()
    assert w[2].tolist() == [tok.bos_token_id, tok.eos_token_id, tok.convert_tokens_to_ids("ohio"), tok.eos_token_id]
    short = tokenize_windows(tok, ["ohio"], context_size=16)  # shorter than one window
    assert short.tolist() == [[tok.bos_token_id, tok.convert_tokens_to_ids("ohio"), tok.eos_token_id]]
    with pytest.raises(CorpusError, match="fewer than one batch"):
        ActivationBuffer(short, fake_read, batch_size=4)


def test_document_windows_drop_padding():
    tok = make_tokenizer()
    docs = ["the capital of texas is austin", "ohio", "maine is small"]
    ids, lengths = make_windows(tok, docs, context_size=16)  # auto: every doc fits -> one per doc
    assert lengths.tolist() == [7, 2, 4] and ids.shape == (3, 7)
    assert ids[1].tolist()[:2] == [tok.bos_token_id, tok.convert_tokens_to_ids("ohio")]
    packed, plen = make_windows(tok, docs, context_size=6)  # a doc is too long -> packed
    assert packed.shape[1] == 6 and (plen == 6).all()
    pad = 999
    ids[1, 2:], ids[2, 4:] = pad, pad
    buf = ActivationBuffer(ids, fake_read, batch_size=4, lengths=lengths, windows_per_chunk=3)
    x = torch.cat([next(buf)[0] for _ in range(2)])  # 6 + 1 + 3 = 10 real tokens -> 2 batches
    assert x.shape[0] == 8 and not (x[:, 0, 0] == pad).any() and not (x[:, 0, 1] == 0).any()


def test_boundary_tokens_are_skipped_like_position_zero():
    w = windows()
    skip = [int(w[3, 4]), int(w[7, 1]), int(w[12, 8]), 10**6]  # mid-window, first body token, last; absent
    buf = ActivationBuffer(w, fake_read, batch_size=1, seed=2, windows_per_chunk=4, skip_token_ids=skip)
    seen = torch.cat([x for x, _ in drain(buf, 157)])[:, 0, 0].long()  # one epoch: 160 - 3 tokens
    assert sorted(seen.tolist()) == sorted(set(w[:, 1:].flatten().tolist()) - set(skip))


def test_a_corpus_of_boundaries_is_too_short():
    w = windows(n=2, P=9)  # 16 tokens after position 0, 14 of them boundaries here
    with pytest.raises(CorpusError, match="corpus too short: 2 tokens"):
        ActivationBuffer(w, fake_read, batch_size=4, skip_token_ids=w[:, 1:8].flatten().tolist())
    ActivationBuffer(w, fake_read, batch_size=4, skip_token_ids=w[:, 1:7].flatten().tolist())  # 4 left: one batch
