"""The spectral codec (audio/spectral.py): the VAE interface and contract, streaming == offline,
causality, strict loading through load_vae, config round trips, phase coherence and training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audio.contract import CONTRACT
from audio.errors import LivefoleyError
from audio.spectral import SpectralCodec, SpectralCodecConfig
from audio.vae import VAE_PRESETS, VAEConfig, build_vae, load_vae, save_vae

HOP = CONTRACT.hop


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def codec() -> SpectralCodec:
    torch.manual_seed(3)
    return build_vae(VAE_PRESETS["spectral"]).eval().requires_grad_(False)


def _latents(seed: int, t: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 64, t, generator=torch.Generator().manual_seed(seed))


def test_the_contract_shapes(codec):
    wav = 0.1 * torch.randn(2, 2, 5 * HOP, generator=torch.Generator().manual_seed(0))
    z = codec.encode(wav)
    mean, logvar = codec.encode_dist(wav)
    assert z.shape == mean.shape == logvar.shape == (2, CONTRACT.latent_dim, 5)
    torch.testing.assert_close(z, mean)
    assert codec.decode(z).shape == (2, 2, 5 * HOP)
    assert codec.hop == HOP and codec.latent_dim == 64 and codec.audio_channels == 2


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_streaming_decode_equals_offline_exactly(codec, chunk):
    z = _latents(chunk, 14)
    offline = codec.decode(z)
    with codec.streaming(2):
        streamed = torch.cat([codec.decode(z[..., i : i + chunk]) for i in range(0, 14, chunk)], -1)
    assert streamed.shape == (2, 2, 14 * HOP)
    torch.testing.assert_close(streamed, offline, atol=0, rtol=0)


@pytest.mark.parametrize("chunk", [1, 2, 7])
def test_streaming_encode_equals_offline(codec, chunk):
    wav = 0.1 * torch.randn(2, 2, 14 * HOP, generator=torch.Generator().manual_seed(chunk))
    offline = codec.encode(wav)
    with codec.streaming(2):
        step = chunk * HOP
        streamed = torch.cat([codec.encode(wav[..., i : i + step]) for i in range(0, wav.shape[-1], step)], -1)
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=1e-4)


def test_decoding_is_causal(codec):
    z = _latents(10, 12)
    changed = z.clone()
    changed[..., 7:] = _latents(11, 5)
    a, b = codec.decode(z), codec.decode(changed)
    torch.testing.assert_close(a[..., : 7 * HOP], b[..., : 7 * HOP], atol=0, rtol=0)
    assert not torch.allclose(a[..., 7 * HOP :], b[..., 7 * HOP :])


def test_encoding_is_causal(codec):
    wav = 0.1 * torch.randn(1, 2, 10 * HOP, generator=torch.Generator().manual_seed(1))
    changed = wav.clone()
    changed[..., 6 * HOP :] = 0.3 * torch.randn(1, 2, 4 * HOP, generator=torch.Generator().manual_seed(2))
    a, b = codec.encode(wav), codec.encode(changed)
    torch.testing.assert_close(a[..., :6], b[..., :6], atol=0, rtol=0)
    assert not torch.allclose(a[..., 6:], b[..., 6:])


def test_reset_and_a_new_block_start_from_zero_state(codec):
    z = _latents(4, 3, batch=1)
    with codec.streaming(1):
        first = torch.cat([codec.decode(z[..., i : i + 1]) for i in range(3)], -1)
        codec.reset_streaming()
        again = torch.cat([codec.decode(z[..., i : i + 1]) for i in range(3)], -1)
        dirty = codec.decode(z[..., :1])
    torch.testing.assert_close(again, first, atol=0, rtol=0)
    assert not torch.allclose(dirty, first[..., :HOP])
    with codec.streaming(1), pytest.raises(LivefoleyError, match="batch size 1"):
        codec.decode(_latents(0, 1, batch=2))
    assert not codec.is_streaming


def test_bad_inputs_are_clear_errors(codec):
    with pytest.raises(LivefoleyError, match="whole frames of 1600"):
        codec.encode(torch.zeros(1, 2, 1000))
    with pytest.raises(LivefoleyError, match="NaN"):
        codec.encode(torch.full((1, 2, HOP), float("nan")))
    with pytest.raises(LivefoleyError, match=r"\(batch, 64, frames>0\)"):
        codec.decode(torch.zeros(1, 32, 2))


def test_a_steady_tone_is_resynthesised_coherently(codec):
    """The phase vocoder: magnitudes of a pure 1 kHz tone come back as that tone, not as noise —
    the output correlates with a sinusoid of the same frequency over a whole second."""
    c = codec.config
    t = torch.arange(30 * HOP + c.lookahead) / CONTRACT.sample_rate
    tone = 0.3 * torch.cos(2 * torch.pi * 1000.0 * t)
    wav = tone.expand(1, 2, -1)
    mag = (codec.log_magnitudes(wav).exp() - c.log_floor).clamp_min(0)  # the true magnitudes
    region, advance = codec._phase_plan(mag)
    freq_bins = advance[0, 10, 1000 * c.n_fft // CONTRACT.sample_rate] * c.n_fft / (2 * np.pi * c.sub_hop)
    assert abs(float(freq_bins) * CONTRACT.sample_rate / c.n_fft - 1000.0) < 5.0  # interpolated peak
    st = codec._new_state(1, torch.device("cpu"), torch.float32)
    k = c.frames_per_latent
    out = torch.cat([codec.synthesise(mag[:, :, i * k : (i + 1) * k], st) for i in range(30)], -1)
    second = out[0, 0, 10 * HOP :].numpy()
    spec = np.abs(np.fft.rfft(second * np.hanning(second.size)))
    peak_hz = np.argmax(spec) * CONTRACT.sample_rate / second.size
    assert abs(peak_hz - 1000.0) < 3.0
    assert spec.max() / np.median(spec) > 1e3  # a line, not shaped noise


def test_config_round_trips_and_loads_strictly(tmp_path, codec):
    cfg = VAE_PRESETS["spectral"]
    assert VAEConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    folder = save_vae(codec, tmp_path / "codec")
    loaded = load_vae(folder)
    assert isinstance(loaded, SpectralCodec) and loaded.config == cfg
    z = _latents(2, 3, batch=1)
    torch.testing.assert_close(loaded.decode(z), codec.decode(z), atol=0, rtol=0)
    # a config of another width does not take these weights, and says which tensors differ
    other = SpectralCodecConfig(width=256)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps(other.to_dict()))
    with pytest.raises(LivefoleyError, match="wrong shape"):
        load_vae(tmp_path / "other", folder / "model.safetensors")
    # an Oobleck checkpoint is refused by the spectral config (missing/unexpected keys)
    tiny = save_vae(load_vae("tiny"), tmp_path / "tiny")
    with pytest.raises(LivefoleyError, match="missing"):
        load_vae(folder, tiny / "model.safetensors")


def test_invalid_configs_are_refused():
    with pytest.raises(LivefoleyError, match="multiple of sub_hop"):
        SpectralCodecConfig(sub_hop=300)
    with pytest.raises(LivefoleyError, match="width must be a positive integer"):
        SpectralCodecConfig(width=0)


def test_training_reduces_the_magnitude_loss_on_world_audio():
    from capture.synthetic import world_audio

    torch.manual_seed(0)
    audio, _, _ = world_audio(5, 90)
    c = VAE_PRESETS["spectral"]
    model = build_vae(c).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    n = 8 * HOP + c.lookahead
    batch = torch.from_numpy(np.stack([audio[:, s : s + n] for s in (0, 20 * HOP, 40 * HOP, 60 * HOP)]))
    losses = []
    for _ in range(60):
        mean, logvar = model.encode_dist(batch[..., : 8 * HOP])
        loss = model.magnitude_loss(mean + torch.exp(0.5 * logvar) * torch.randn_like(mean), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0]
    with torch.no_grad():
        z = model.encode(batch[..., : 8 * HOP])
    assert float(z.std(-1).mean()) > 0.05  # the latent varies with the sound (no collapse)


def test_load_vae_takes_a_config_object_and_a_folder(tmp_path, codec):
    """The generator's trainer loads its cache's codec from a config object (not a name or a path)."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in codec.state_dict().items()}, str(tmp_path / "w.safetensors"))
    loaded = load_vae(SpectralCodecConfig(), tmp_path / "w.safetensors")
    assert isinstance(loaded, SpectralCodec)
    z = _latents(7, 2, batch=1)
    torch.testing.assert_close(loaded.decode(z), codec.decode(z), atol=0, rtol=0)
