"""The diffusion head: preconditioning, EDM2 / ECT losses, Heun and consistency samplers."""

import pytest
import torch

from audio.errors import LivefoleyError
from model.head import DiffusionHead, HeadConfig, edm_sigmas, precondition


def _head(consistency: bool = False, **kw) -> DiffusionHead:
    torch.manual_seed(0)
    config = HeadConfig(**{"cond_dim": 16, "width": 64, "depth": 2, "batch_mul": 2, **kw})
    return DiffusionHead(config, consistency=consistency)


def test_preconditioning_is_edm_and_consistency_boundary_holds():
    s = torch.tensor([0.002, 0.5, 80.0])
    c_skip, c_out, c_in, c_noise = precondition(s, sigma_data=0.5, sigma_min=0.0)
    torch.testing.assert_close(c_skip, 0.25 / (s**2 + 0.25))
    torch.testing.assert_close(c_out, s * 0.5 / (s**2 + 0.25).sqrt())
    torch.testing.assert_close(c_in, 1 / (s**2 + 0.25).sqrt())
    torch.testing.assert_close(c_noise, s.log() / 4)
    head = _head(consistency=True)
    for p in head.parameters():  # make the raw network non-trivial
        torch.nn.init.normal_(p, std=0.1) if p.requires_grad else None
    x = torch.randn(5, 64)
    out = head.denoise(x, torch.full((5,), head.config.sigma_min), head.embed_condition(torch.randn(5, 16)))
    torch.testing.assert_close(out, x)  # f(x, sigma_min) = x


def _overfit(loss_fn, head, steps=100):
    torch.manual_seed(1)
    x0 = torch.randn(8, 64)
    cond = torch.randn(8, 16)
    opt = torch.optim.Adam(head.parameters(), lr=2e-3)
    losses = []
    for _ in range(steps):
        # the same noise levels and noise every step: a fixed batch to overfit
        loss = loss_fn(x0, cond, torch.Generator().manual_seed(0)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return sum(losses[:10]) / 10, sum(losses[-10:]) / 10


def test_edm2_loss_decreases_when_overfitting():
    head = _head()
    first, last = _overfit(lambda x, c, g: head.diffusion_loss(x, c, generator=g), head)
    assert last < first - 0.5, (first, last)


def test_ect_loss_decreases_when_overfitting():
    head = _head(consistency=True)
    first, last = _overfit(lambda x, c, g: head.ect_loss(x, c, stage=2, generator=g), head)
    assert last < 0.5 * first, (first, last)


def test_ect_r_schedule_shrinks_with_stage():
    head = _head()
    t = torch.tensor([0.1, 1.0, 10.0, 80.0])
    gaps = [(t - head.ect_r(t, s)) / t for s in range(6)]
    for a, b in zip(gaps, gaps[1:], strict=False):
        assert torch.all(b[a < 1] <= a[a < 1] * 0.5 + 1e-6)  # t − r halves (where r was > 0)
    assert torch.all(head.ect_r(t, 0) >= 0)


def test_samplers_shapes_nfe_and_validation():
    head = _head(heun_steps=4)
    cond = torch.randn(3, 16)
    assert head.valid_nfe() == (7,)
    x = head.sample(cond, noise=torch.randn(1, 3, 64))
    assert x.shape == (3, 64) and torch.isfinite(x).all()
    with pytest.raises(LivefoleyError, match="consistency-tuned"):
        head.sample(cond, nfe=1, noise=torch.randn(1, 3, 64))
    head = _head(consistency=True, heun_steps=4)
    assert head.valid_nfe() == (1, 2, 4)
    for nfe in (1, 2, 4):
        assert head.noise_draws(nfe) == nfe
        assert head.sample(cond, nfe=nfe, noise=torch.randn(nfe, 3, 64)).shape == (3, 64)
    with pytest.raises(LivefoleyError, match="valid values: \\[1, 2, 4\\]"):
        head.sample(cond, nfe=3, noise=torch.randn(3, 3, 64))


def test_heun_on_a_perfect_denoiser_recovers_the_data_point():
    """With D(x, σ) = x0 (the ideal denoiser for a single data point) Heun must land on x0."""
    head = _head(heun_steps=10)
    x0 = torch.randn(2, 64)
    head.denoise = lambda x, s, c, sigma_min=None: x0.expand_as(x)  # ideal denoiser, not the net
    out = head.sample(torch.randn(2, 16), noise=torch.randn(1, 2, 64))
    torch.testing.assert_close(out, x0)
    s = edm_sigmas(head.config)
    assert s[0] == pytest.approx(80.0) and s[-1] == 0 and torch.all(s[:-1] > s[1:])
