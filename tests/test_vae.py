"""The causal streaming VAE: parity with Sony's reference (fixtures made by running their code),
streaming == offline, causality, shapes at the edges, strict weight loading and presets."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from audio.contract import CONTRACT
from audio.errors import LivefoleyError
from audio.vae import (
    LOGVAR_RANGE,
    VAE_PRESETS,
    CausalVAE,
    VAEConfig,
    load_vae,
    pad_to_hop,
    save_vae,
)
from tests.conftest import SR_VAE_FIXTURES

TOL = {"atol": 1e-5, "rtol": 1e-4}  # the fixture README's suggested float32 tolerance
TINY_CONFIG = SR_VAE_FIXTURES / "tiny_causal_config.json"
TINY_WEIGHTS = SR_VAE_FIXTURES / "tiny_causal_weights.safetensors"
HOP = CONTRACT.hop


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return load_file(str(SR_VAE_FIXTURES / "tiny_causal_io.safetensors"))


@pytest.fixture(scope="module")
def vae() -> CausalVAE:
    return load_vae(TINY_CONFIG, TINY_WEIGHTS)


def _stream_decode(vae: CausalVAE, z: torch.Tensor, chunk: int) -> torch.Tensor:
    with vae.streaming(z.shape[0]):
        return torch.cat([vae.decode(z[..., i : i + chunk]) for i in range(0, z.shape[-1], chunk)], dim=-1)


def _stream_encoder(vae: CausalVAE, wav: torch.Tensor, chunk_frames: int) -> torch.Tensor:
    """Streaming *pre-bottleneck* encoder output (what the reference fixture stores)."""
    step = chunk_frames * vae.hop
    with vae.streaming(wav.shape[0]):
        return torch.cat([vae.encoder(wav[..., i : i + step]) for i in range(0, wav.shape[-1], step)], dim=-1)


# ---- the full-size architecture == Sony's checkpoint layout -----------------------------------


def test_sr_causal_state_dict_matches_manifest_key_for_key_and_shape_for_shape():
    manifest = json.loads((SR_VAE_FIXTURES / "sr_causal_state_dict_manifest.json").read_text())
    counts = json.loads((SR_VAE_FIXTURES / "sr_causal_param_counts.json").read_text())
    with torch.device("meta"):  # shapes only: no 600 MB allocation
        model = CausalVAE(VAE_PRESETS["sr-causal"])
    sd = model.state_dict()
    assert len(sd) == len(manifest) == counts["num_state_dict_entries"] == 365
    assert sorted(sd) == sorted(k for k, _, _ in manifest)
    assert list(sd) == [k for k, _, _ in manifest]  # same order too (bias, weight_g, weight_v)
    for key, shape, dtype in manifest:
        assert list(sd[key].shape) == shape, key
        assert dtype == "float32" and sd[key].dtype == torch.float32, key
    n = model.num_parameters()
    assert n["encoder"] == counts["encoder_params"]
    assert n["decoder"] == counts["decoder_params"]
    assert n["total"] == counts["total_params"]

    def fused(module: torch.nn.Module) -> int:  # weight_g folded into weight_v
        return sum(p.numel() for name, p in module.named_parameters() if not name.endswith("weight_g"))

    assert fused(model.encoder) == counts["encoder_params_after_weight_norm_fusion"]
    assert fused(model.decoder) == counts["decoder_params_after_weight_norm_fusion"]
    assert not list(model.buffers())  # the checkpoint has no buffers


def test_sony_style_config_json_parses_to_the_sr_causal_preset(tmp_path):
    data = json.loads(TINY_CONFIG.read_text())
    for side in ("encoder", "decoder"):
        data["model"][side]["config"]["channels"] = 128
    data["training"] = {"learning_rate": 1.5e-4, "use_ema": True}  # Sony's file has this section
    path = tmp_path / "sr_ds_1600_dim_64_causal.json"
    path.write_text(json.dumps(data))
    assert VAEConfig.from_json(path) == VAE_PRESETS["sr-causal"]
    assert VAE_PRESETS["sr-causal"].hop == CONTRACT.hop == 1600


@pytest.mark.parametrize("name", sorted(VAE_PRESETS))
def test_preset_config_round_trips_through_dict(name):
    cfg = VAE_PRESETS[name]
    assert VAEConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.hop == CONTRACT.hop and cfg.latent_dim == CONTRACT.latent_dim


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda d: d["model"]["decoder"]["config"].update(channels=8), "differ in 'channels'"),
        (lambda d: d["model"]["encoder"]["config"].update(latent_dim=64), "2 × 64"),
        (lambda d: [d["model"][s]["config"].update(causal=False) for s in ("encoder", "decoder")], "causal"),
        (lambda d: d["model"]["bottleneck"].update(type="rvq"), "bottleneck"),
        (lambda d: d["model"].pop("encoder"), "model.encoder"),
        (lambda d: d["model"].update(downsampling_ratio=2048), "downsampling_ratio"),
    ],
)
def test_config_that_cannot_be_built_says_why(tmp_path, edit, words):
    data = json.loads(TINY_CONFIG.read_text())
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LivefoleyError, match="bad.json") as err:
        VAEConfig.from_json(path)
    assert words in str(err.value)


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(LivefoleyError) as err:
        load_vae("huge")
    for name in VAE_PRESETS:
        assert name in str(err.value)


# ---- parity with the reference implementation -------------------------------------------------


def test_offline_decode_matches_reference(vae, ref):
    with torch.no_grad():
        torch.testing.assert_close(vae.decode(ref["dec_in_latents"]), ref["dec_out_offline"], **TOL)


def test_decoder_intermediate_activations_match_reference(vae, ref):
    x = ref["dec_in_latents"]
    with torch.no_grad():
        for i, layer in enumerate(vae.decoder.layers):
            x = layer(x)
            key = f"dec_act_offline.layers.{i}"
            if key in ref:
                torch.testing.assert_close(x, ref[key], **TOL, msg=lambda m, i=i: f"decoder.layers.{i}: {m}")


def test_encoder_intermediate_activations_match_reference(vae, ref):
    x = ref["enc_in_wave"]
    with torch.no_grad():
        for i, layer in enumerate(vae.encoder.layers):
            x = layer(x)
            key = f"enc_act_offline.layers.{i}"
            if key in ref:
                torch.testing.assert_close(x, ref[key], **TOL, msg=lambda m, i=i: f"encoder.layers.{i}: {m}")


def test_streaming_decode_one_latent_per_call_matches_reference(vae, ref):
    with torch.no_grad():
        out = _stream_decode(vae, ref["dec_in_latents"], 1)
    torch.testing.assert_close(out, ref["dec_out_stream"], **TOL)
    torch.testing.assert_close(out, ref["dec_out_offline"], **TOL)


def test_encoder_offline_and_bottleneck_match_reference(vae, ref):
    wav = ref["enc_in_wave"]
    with torch.no_grad():
        torch.testing.assert_close(vae.encoder(wav), ref["enc_out_pre_bottleneck_offline"], **TOL)
        torch.testing.assert_close(vae.encode(wav), ref["enc_mean_offline"], **TOL)
        mean, logvar = vae.encode_dist(wav)
    torch.testing.assert_close(mean, ref["enc_mean_offline"], **TOL)
    torch.testing.assert_close(logvar, ref["enc_logvar_offline_unclamped"].clamp(*LOGVAR_RANGE), **TOL)
    sampled = mean + torch.exp(0.5 * logvar) * ref["bottleneck_noise"]
    torch.testing.assert_close(sampled, ref["enc_latents_sampled_offline"], **TOL)


def test_streaming_encoder_1600_samples_per_call_matches_reference(vae, ref):
    with torch.no_grad():
        out = _stream_encoder(vae, ref["enc_in_wave"], 1)
    torch.testing.assert_close(out, ref["enc_out_pre_bottleneck_stream"], **TOL)
    torch.testing.assert_close(out[:, :64], ref["enc_mean_stream"], **TOL)


def test_reconstruction_from_mean_offline_and_streaming_match_reference(vae, ref):
    wav = ref["enc_in_wave"]
    with torch.no_grad():
        torch.testing.assert_close(vae(wav), ref["recon_from_mean_offline"], **TOL)
        with vae.streaming(1):
            out = torch.cat(
                [vae.decode(vae.encode(wav[..., i : i + HOP])) for i in range(0, wav.shape[-1], HOP)], dim=-1
            )
    torch.testing.assert_close(out, ref["recon_from_mean_stream"], **TOL)


def test_training_mode_with_autograd_computes_the_same_function(ref):
    model = load_vae(TINY_CONFIG, TINY_WEIGHTS).train().requires_grad_(True)
    z = ref["dec_in_latents"].clone().requires_grad_(True)
    out = model.decode(z)
    torch.testing.assert_close(out.detach(), ref["dec_out_offline"], **TOL)
    out.square().mean().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert model.decoder.layers[0].weight_v.grad is not None


# ---- streaming and causality invariants --------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 2, 7])
def test_streaming_decode_equals_offline_for_chunk_sizes(vae, chunk):
    z = torch.randn(2, 64, 14, generator=torch.Generator().manual_seed(chunk))
    with torch.no_grad():
        offline = vae.decode(z)
        streamed = _stream_decode(vae, z, chunk)
    assert streamed.shape == (2, 2, 14 * HOP)
    torch.testing.assert_close(streamed, offline, **TOL)


@pytest.mark.parametrize("chunk", [1, 2, 7])
def test_streaming_encode_equals_offline_for_chunk_sizes(vae, chunk):
    wav = 0.1 * torch.randn(2, 2, 14 * HOP, generator=torch.Generator().manual_seed(chunk))
    with torch.no_grad():
        offline = vae.encode(wav)
        with vae.streaming(2):
            step = chunk * HOP
            streamed = torch.cat(
                [vae.encode(wav[..., i : i + step]) for i in range(0, wav.shape[-1], step)], -1
            )
    torch.testing.assert_close(streamed, offline, **TOL)


def test_streaming_state_is_zeroed_on_entry_and_by_reset(vae):
    z = torch.randn(1, 64, 3, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        first = _stream_decode(vae, z, 1)
        again = _stream_decode(vae, z, 1)  # a new block starts from zero state
        with vae.streaming(1):
            vae.decode(torch.randn(1, 64, 4))
            vae.reset_streaming()
            after_reset = torch.cat([vae.decode(z[..., i : i + 1]) for i in range(3)], -1)
            dirty = vae.decode(z[..., :1])  # state carries over: differs from a fresh start
    torch.testing.assert_close(again, first, atol=0, rtol=0)
    torch.testing.assert_close(after_reset, first, atol=0, rtol=0)
    assert not torch.allclose(dirty, first[..., :HOP], atol=1e-4)
    assert not vae.is_streaming


def test_streaming_rejects_a_different_batch_size_and_nesting(vae):
    with torch.no_grad(), vae.streaming(1):
        with pytest.raises(LivefoleyError, match="batch size 1"):
            vae.decode(torch.randn(2, 64, 1))
        with pytest.raises(RuntimeError, match="already streaming"), vae.streaming(1):
            pass


def test_decoder_is_causal(vae):
    z = torch.randn(1, 64, 9, generator=torch.Generator().manual_seed(1))
    z2 = z.clone()
    z2[..., 5:] += torch.randn(1, 64, 4)
    with torch.no_grad():
        full, changed, prefix = vae.decode(z), vae.decode(z2), vae.decode(z[..., :5])
    torch.testing.assert_close(changed[..., : 5 * HOP], full[..., : 5 * HOP], atol=0, rtol=0)
    torch.testing.assert_close(prefix, full[..., : 5 * HOP], **TOL)
    assert not torch.allclose(changed[..., 5 * HOP :], full[..., 5 * HOP :], atol=1e-4)


def test_encoder_is_causal(vae):
    wav = 0.1 * torch.randn(1, 2, 9 * HOP, generator=torch.Generator().manual_seed(2))
    wav2 = wav.clone()
    wav2[..., 5 * HOP :] = 0.3 * torch.randn(1, 2, 4 * HOP)
    with torch.no_grad():
        full, changed, prefix = vae.encode(wav), vae.encode(wav2), vae.encode(wav[..., : 5 * HOP])
    torch.testing.assert_close(changed[..., :5], full[..., :5], atol=0, rtol=0)
    torch.testing.assert_close(prefix, full[..., :5], **TOL)
    assert not torch.allclose(changed[..., 5:], full[..., 5:], atol=1e-4)


# ---- shapes and bad input at the edge ----------------------------------------------------------


def test_shapes_for_whole_frames(vae):
    with torch.no_grad():
        z = vae.encode(torch.zeros(3, 2, 4 * HOP))
        assert z.shape == (3, 64, 4)
        assert vae.decode(z).shape == (3, 2, 4 * HOP)


@pytest.mark.parametrize("n", [1599, 1601, 3 * 1600 - 1, 0])
def test_partial_frames_are_an_error_naming_the_fix(vae, n):
    with pytest.raises(LivefoleyError) as err:
        vae.encode(torch.zeros(1, 2, n))
    assert f"got {n} samples" in str(err.value)
    assert "pad_to_hop" in str(err.value) and "1600" in str(err.value)


def test_pad_to_hop_pads_right_with_zeros_then_encodes(vae):
    wav = torch.randn(1, 2, 1601)
    padded = pad_to_hop(wav, HOP)
    assert padded.shape == (1, 2, 3200)
    torch.testing.assert_close(padded[..., :1601], wav, atol=0, rtol=0)
    assert not padded[..., 1601:].any()
    assert pad_to_hop(padded, HOP) is padded
    with torch.no_grad():
        assert vae.encode(padded).shape == (1, 64, 2)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_is_rejected(vae, bad):
    wav = torch.zeros(1, 2, HOP)
    wav[0, 1, 100] = bad
    with pytest.raises(LivefoleyError, match="NaN or infinite"):
        vae.encode(wav)
    with pytest.raises(LivefoleyError, match="NaN or infinite"):
        vae.encode_dist(wav)


@pytest.mark.parametrize("shape", [(2, 1600), (1, 1, 1600), (1, 6, 1600)])
def test_wrong_waveform_layout_is_rejected(vae, shape):
    with pytest.raises(LivefoleyError, match=r"\(batch, 2, samples\)"):
        vae.encode(torch.zeros(shape))


def test_wrong_latent_layout_is_rejected(vae):
    with pytest.raises(LivefoleyError, match="64"):
        vae.decode(torch.zeros(1, 32, 3))


# ---- loading weights ---------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "autoencoder."])
def test_sony_style_ckpt_loads(tmp_path, ref, prefix):
    sd = {prefix + k: v for k, v in load_file(str(TINY_WEIGHTS)).items()}
    if prefix:  # a raw Lightning checkpoint also carries the discriminator
        sd["discriminator.convs.0.weight"] = torch.zeros(3, 3)
    path = tmp_path / "sr_causal_tiny.ckpt"
    torch.save({"state_dict": sd}, path)
    model = load_vae(TINY_CONFIG, path)
    with torch.no_grad():
        torch.testing.assert_close(model.decode(ref["dec_in_latents"]), ref["dec_out_offline"], **TOL)


def test_raw_lightning_ckpt_prefers_the_ema_weights(tmp_path, ref):
    good = load_file(str(TINY_WEIGHTS))
    sd = {"autoencoder." + k: torch.zeros_like(v) for k, v in good.items()}  # the non-EMA copy
    sd |= {"autoencoder_ema.ema_model." + k: v for k, v in good.items()}
    sd |= {"autoencoder_ema.initted": torch.tensor(True), "autoencoder_ema.step": torch.tensor(10)}
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": sd, "global_step": 10}, path)
    with torch.no_grad():
        out = load_vae(TINY_CONFIG, path).decode(ref["dec_in_latents"])
    torch.testing.assert_close(out, ref["dec_out_offline"], **TOL)


def _broken(kind: str) -> tuple[dict, str]:
    sd = load_file(str(TINY_WEIGHTS))
    if kind == "missing":
        del sd["decoder.layers.7.weight_v"]
        return sd, "missing: decoder.layers.7.weight_v"
    if kind == "shape":
        sd["encoder.layers.0.weight_v"] = torch.zeros(4, 2, 5)
        return sd, "encoder.layers.0.weight_v: file (4, 2, 5) vs model (4, 2, 7)"
    sd["decoder.layers.7.bias"] = torch.zeros(2)  # the last decoder conv has no bias
    return sd, "unexpected: decoder.layers.7.bias"


@pytest.mark.parametrize("kind", ["missing", "shape", "extra"])
@pytest.mark.parametrize("fmt", ["ckpt", "safetensors"])
def test_mismatched_weights_name_the_key(tmp_path, kind, fmt):
    sd, words = _broken(kind)
    path = tmp_path / f"bad.{fmt}"
    if fmt == "ckpt":
        torch.save({"state_dict": sd}, path)
    else:
        save_file(sd, str(path))
    with pytest.raises(LivefoleyError) as err:
        load_vae(TINY_CONFIG, path)
    assert words in str(err.value) and str(path) in str(err.value)


def test_weights_of_another_size_list_the_mismatched_shapes():
    with pytest.raises(LivefoleyError, match="wrong shape") as err:
        load_vae("tiny", TINY_WEIGHTS)  # 4-channel fixture weights, 8-channel preset
    assert "(+" in str(err.value)  # long lists are cut after 10 entries


def test_non_tensor_checkpoint_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"encoder.layers.0.bias": object.__new__(dataclasses.Field)}}, path)
    with pytest.raises(LivefoleyError, match="tensors-only"):
        load_vae(TINY_CONFIG, path)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(LivefoleyError, match="safetensors"):
        load_vae(TINY_CONFIG, tmp_path / "junk.safetensors")
    with pytest.raises(LivefoleyError, match="do not exist"):
        load_vae(TINY_CONFIG, tmp_path / "nothing.ckpt")


def test_model_folder_round_trip(tmp_path, vae, ref):
    save_vae(vae, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "model.safetensors"]
    again = load_vae(tmp_path / "run")
    assert again.config == vae.config
    with torch.no_grad():
        torch.testing.assert_close(again.decode(ref["dec_in_latents"]), ref["dec_out_offline"], **TOL)


def test_cached_fused_weights_follow_in_place_updates():
    model = load_vae(TINY_CONFIG, TINY_WEIGHTS)
    z = torch.randn(1, 64, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = model.decode(z)
        model.decoder.layers[7].weight_g.mul_(2.0)  # output conv: linear in its weight, no bias
        torch.testing.assert_close(model.decode(z), 2 * before, **TOL)


# ---- every preset builds and round-trips shapes -------------------------------------------------


@pytest.mark.parametrize("name", sorted(VAE_PRESETS))
def test_every_preset_builds_and_round_trips_shapes(name):
    torch.manual_seed(0)
    model = load_vae(name)
    assert model.hop == CONTRACT.hop and model.latent_dim == CONTRACT.latent_dim
    assert model.sample_rate == CONTRACT.sample_rate
    with torch.inference_mode():  # one frame each way: the full-size model is ~150M parameters
        z = model.encode(0.1 * torch.randn(1, 2, HOP))
        assert z.shape == (1, 64, 1) and torch.isfinite(z).all()
        wav = model.decode(z)
        assert wav.shape == (1, 2, HOP) and torch.isfinite(wav).all()
        with model.streaming(1):
            torch.testing.assert_close(model.decode(z), wav, **TOL)


# ---- the `livefoley vae` command ---------------------------------------------------------------


def _model_flags() -> list[str]:
    return ["--config", str(TINY_CONFIG), "--weights", str(TINY_WEIGHTS)]


def test_cli_reconstructs_the_sound_of_a_video_like_the_offline_model(tmp_path, vae, capsys):
    import numpy as np
    import soundfile as sf

    from audio.io import read_audio
    from plugin.cli import main as cli
    from tests.test_audio_io import encode_media, sine

    n = 44100
    audio = np.stack([sine(440, n, 44100, 0.4), sine(550, n, 44100, 0.2)])
    video = encode_media(tmp_path / "clip.mp4", audio=audio, video_frames=30)
    out = tmp_path / "recon.flac"
    # small chunks: the command streams, and the result must still equal one offline pass
    assert (
        cli(
            [
                "vae",
                "reconstruct",
                str(video),
                "-o",
                str(out),
                *_model_flags(),
                "--chunk-seconds",
                "0.1",
                "--json",
            ]
        )
        == 0
    )
    figures = json.loads(capsys.readouterr().out)
    wav = read_audio(video)
    x = pad_to_hop(torch.from_numpy(wav)[None], HOP)
    with torch.no_grad():
        expected = vae(x)[0, :, : wav.shape[1]].clamp(-1, 1).numpy()
    written, rate = sf.read(out, always_2d=True, dtype="float32")
    assert rate == CONTRACT.sample_rate and written.shape == (wav.shape[1], 2)
    np.testing.assert_allclose(written.T, expected, atol=2e-5)
    assert figures["latent_frames"] == x.shape[-1] // HOP and figures["output"] == str(out)


def test_cli_reconstruct_refuses_bad_input_and_writes_nothing(tmp_path, capsys):
    from plugin.cli import main as cli

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(range(256)) * 20)
    out = tmp_path / "out.wav"
    assert cli(["vae", "reconstruct", str(broken), "-o", str(out), *_model_flags()]) == 1
    assert "broken.mp4" in capsys.readouterr().err and not out.exists()
    assert cli(["vae", "reconstruct", str(broken), "-o", str(tmp_path / "out.mp3"), *_model_flags()]) == 2
    assert ".wav or .flac" in capsys.readouterr().err
    assert cli(["vae", "reconstruct", str(broken), "-o", str(out), "--preset", "tiny"]) == 2
    assert "--weights" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [broken]


def test_cli_info_reports_the_size(capsys):
    from plugin.cli import main as cli

    assert cli(["vae", "info", "--config", str(TINY_CONFIG), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["hop"] == HOP and info["channels"] == 4 and info["latent_rate_hz"] == CONTRACT.fps
    assert info["params_total"] == sum(v.numel() for v in load_file(str(TINY_WEIGHTS)).values())
