import pytest
import torch
from training_fixtures import make_model

from circuit_trace.models import get_adapter
from circuit_trace.transcoders import Transcoder
from circuit_trace.transcoders.training import (
    ReconstructionStats,
    dead_fraction,
    fvu,
    l0,
    nmse,
    replace_mlps,
    replacement_metrics,
)


def test_fvu_nmse_l0_definitions():
    y = torch.tensor([[[1.0, 0.0]], [[3.0, 0.0]]])  # [N=2, L=1, d=2]; ȳ = (2, 0)
    y_hat = torch.tensor([[[2.0, 0.0]], [[2.0, 1.0]]])  # Σ‖y−ŷ‖² = 1 + 2 = 3
    assert fvu(y, y_hat).tolist() == [3 / 2]  # Σ‖y−ȳ‖² = 2
    assert nmse(y, y_hat).tolist() == [3 / 10]  # Σ‖y‖² = 10
    assert l0([torch.tensor([[1.0, 0, 2], [0, 0, 0]])]).tolist() == [1.0]
    assert dead_fraction(torch.tensor([[0, 5, 10, 20]]), window=10) == 0.5


def test_streaming_stats_match_batch():
    g = torch.Generator().manual_seed(0)
    y, y_hat = torch.randn(100, 3, 4, generator=g) + 2, torch.randn(100, 3, 4, generator=g)
    acts = [torch.relu(torch.randn(100, 8, generator=g)) for _ in range(3)]
    s = ReconstructionStats(3)
    for i in range(0, 100, 30):
        s.update(y[i : i + 30], y_hat[i : i + 30], [a[i : i + 30] for a in acts])
    torch.testing.assert_close(torch.tensor(s.fvu(), dtype=torch.float64), fvu(y, y_hat))
    torch.testing.assert_close(torch.tensor(s.nmse(), dtype=torch.float64), nmse(y, y_hat))
    torch.testing.assert_close(torch.tensor(s.l0()), l0(acts))
    part = ReconstructionStats(3)  # some of the tokens, taken out again
    drop = torch.zeros(100, dtype=torch.bool)
    drop[[3, 50, 97]] = True
    part.update(y[drop], y_hat[drop], [a[drop] for a in acts])
    rest = s.without(part)
    assert rest.n_tokens == 97
    torch.testing.assert_close(torch.tensor(rest.fvu(), dtype=torch.float64), fvu(y[~drop], y_hat[~drop]))
    torch.testing.assert_close(torch.tensor(rest.l0()), l0([a[~drop] for a in acts]))


@pytest.mark.parametrize("cross_layer", [True, False])
def test_replacement_metrics_and_hooks_removed(cross_layer):
    model = make_model(40, n_layers=2, d=16, seed=1)
    adapter = get_adapter(model)
    ids = torch.randint(3, 40, (3, 7), generator=torch.Generator().manual_seed(0))
    before = model(ids).logits
    # A model whose MLPs output zero is reproduced exactly by an all-zero transcoder.
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.down_proj.weight.zero_()
    zero = Transcoder(2, 16, 8, cross_layer=True, feature_input_hook="mlp.hook_in")
    m = replacement_metrics(adapter, zero, ids)
    assert m["kl"] < 1e-9 and m["top1_agreement"] == 1.0 and m["tokens"] == 3 * 6
    rand = Transcoder.random(2, 16, 8, cross_layer=cross_layer, skip=True, seed=0, input_hook="mlp.hook_in")
    with torch.no_grad():
        rand.W_dec[0].mul_(50)
    assert replacement_metrics(adapter, rand, ids)["kl"] > 1e-4
    base = model(ids).logits
    seen = {}
    with replace_mlps(adapter, rand):
        hooks = [
            layer.mlp.register_forward_hook(lambda m, a, o, l=l: seen.__setitem__(l, (a[0], o)))
            for l, layer in enumerate(model.model.layers)
        ]
        inside = model(ids).logits
        for h in hooks:
            h.remove()
    xs = torch.stack([seen[l][0] for l in range(2)])
    with torch.no_grad():  # layer l's MLP output = CLT reading layers <= l
        torch.testing.assert_close(torch.stack([seen[l][1] for l in range(2)]), rand.reconstruct(xs))
    assert not torch.allclose(inside, base)
    assert torch.equal(model(ids).logits, base)  # hooks removed
    assert not torch.equal(before, base)


def test_replacement_only_at_the_positions_given():
    """The model keeps its own MLP outputs where `positions` is False (position 0 and the boundary
    tokens in `replacement_metrics`): positions before the first replaced one see the model itself."""
    model = make_model(40, n_layers=2, d=16, seed=1)
    adapter = get_adapter(model)
    ids = torch.randint(3, 40, (2, 7), generator=torch.Generator().manual_seed(0))
    rand = Transcoder.random(2, 16, 8, cross_layer=True, seed=0, input_hook="mlp.hook_in")
    base = model(ids).logits
    with torch.no_grad(), replace_mlps(adapter, rand, positions=torch.zeros(2, 7, dtype=torch.bool)):
        assert torch.equal(model(ids).logits, base)
    later = torch.zeros(2, 7, dtype=torch.bool)
    later[:, 4:] = True
    with torch.no_grad(), replace_mlps(adapter, rand, positions=later):
        mixed = model(ids).logits
    with torch.no_grad(), replace_mlps(adapter, rand):
        full = model(ids).logits
    assert torch.equal(mixed[:, :4], base[:, :4]) and not torch.allclose(mixed[:, 4:], base[:, 4:])
    assert not torch.allclose(mixed[:, 4:], full[:, 4:])  # the earlier positions' MLPs are the model's
    # boundary tokens are neither replaced nor scored: skipping every token of the batch scores nothing
    assert replacement_metrics(adapter, rand, ids, skip_token_ids=ids.unique().tolist())["tokens"] == 0
