import pytest
import torch

from circuit_trace.transcoders import Transcoder
from circuit_trace.transcoders.training import Normalizer, fold_normalization
from circuit_trace.transcoders.training.trainer import load_init


@pytest.mark.parametrize("cross_layer", [True, False])
@pytest.mark.parametrize("activation", ["jumprelu", "topk"])
@pytest.mark.parametrize("skip", [False, True])
def test_fold_is_exact(cross_layer, activation, skip):
    L, d = 3, 16
    torch.manual_seed(0)
    x = torch.randn(200, L, d) * torch.tensor([0.1, 3.0, 40.0])[:, None]  # very different layer scales
    y = torch.randn(200, L, d) * torch.tensor([5.0, 0.2, 1.0])[:, None]
    norm = Normalizer.estimate(x, y)
    torch.testing.assert_close(norm.apply(x, y)[1].norm(dim=-1).mean(0), torch.full((L,), d**0.5))
    norm = Normalizer(norm.x_scale.double(), norm.y_scale.double())
    x, y = x.double(), y.double()
    xn, _ = norm.apply(x, y)
    tc = Transcoder.random(
        L, d, 32, cross_layer=cross_layer, activation=activation, skip=skip, seed=3, dtype=torch.float64
    )
    if activation == "jumprelu":  # train with a log-threshold, as the trainer does
        log_tc = Transcoder(
            L, d, 32, cross_layer=cross_layer, skip=skip, threshold_param="log_threshold", dtype=torch.float64
        )
        log_tc.load_state_dict(
            {**{k: v for k, v in tc.state_dict().items() if k != "threshold"}, "log_threshold": tc.threshold.log()}
        )
        tc = log_tc
    folded = fold_normalization(tc, norm)
    with torch.no_grad():
        want = tc.reconstruct(xn.transpose(0, 1)) / norm.y_scale[:, None, None]
        got = folded.reconstruct(x.transpose(0, 1))
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
        for l in range(L):  # features keep their activations
            torch.testing.assert_close(folded.encode(x[:, l], l), tc.encode(xn[:, l], l))
    if activation == "jumprelu":
        assert folded.threshold_param == "threshold"


def test_unfold_then_fold_roundtrip():
    tc = Transcoder.random(2, 8, 16, cross_layer=True, skip=True, seed=1)
    norm = Normalizer(torch.tensor([2.0, 0.5]), torch.tensor([0.25, 4.0]))
    from circuit_trace.transcoders.training import TrainConfig, new_transcoder

    train_tc = new_transcoder(2, 8, TrainConfig(n_features=16, skip=True))
    load_init(train_tc, tc, norm)
    back = fold_normalization(train_tc, norm)
    x = torch.randn(10, 2, 8).transpose(0, 1)
    with torch.no_grad():
        torch.testing.assert_close(back.reconstruct(x), tc.reconstruct(x), rtol=1e-5, atol=1e-5)
