"""The causal streaming audio VAE ("Oobleck" encoder/decoder, Sony SoundReactor variant).

48 kHz stereo waveform ``(B, 2, N)`` ⇄ 64-d latents ``(B, 64, N / 1600)``, one latent per 30-fps
video frame.  The architecture, the parameter names and the numerics follow Sony's released causal
VAE (``sr_ds_1600_dim_64_causal.json``; see ``tests/fixtures/sr_vae/README.md``), so the model's own
``state_dict`` *is* Sony's checkpoint layout: ``encoder.layers.0.bias / weight_g / weight_v …``.

Building blocks (all causal, no look-ahead):

* :class:`CausalConv1d` - weight-normed conv padded on the left only by ``(K-1)·d + 1 - S`` samples.
* :class:`CausalConvTranspose1d` - weight-normed transposed conv (kernel ``2S``) whose last
  ``K - S`` output samples are the overlap with the next input; offline they are cut off.
* :class:`Snake` - ``x + sin(a·x)² / (b + 1e-9)`` with log-scale per-channel ``a``, ``b``.

Streaming (STYLE.md patterns 1-4): inside ``with vae.streaming(batch_size):`` every causal conv owns
a small preallocated state - a conv its last ``(K-1)·d + 1 - S`` input samples, a transposed conv
its ``K - S`` overlap-add tail - updated in place with ``copy_``.  ``decode`` of one latent then
gives exactly 1600 samples and ``encode`` of 1600 samples one latent, and the concatenated output is
identical to offline processing, because the offline path *is* the streaming path started from a
zero state that is thrown away afterwards.

Lengths: the encoder takes whole frames only.  A length that is not a multiple of the hop is an
error that names the fix (:func:`pad_to_hop`, explicit right zero-padding).  We do not copy the
reference's per-layer "extra" right padding for such lengths: it is not the same as padding the
waveform, and the reference's own streaming script pads the waveform first.

Entry point: :func:`load_vae` (a preset name, a stable-audio-tools JSON, or a model folder; plus
optional ``.safetensors`` / Sony ``.ckpt`` weights).

Layout: :mod:`audio.vae.config` (config, presets), :mod:`audio.vae.layers` (causal convs, Snake,
encoder/decoder), :mod:`audio.vae.model` (:class:`CausalVAE`), :mod:`audio.vae.weights` (load/save);
training is beside, in :mod:`audio.vae_train`; the streaming lifecycle is :mod:`audio.codec`'s.
"""

from audio.vae.config import VAE_PRESETS, VAEConfig, VAEConfigError, VAEWeightsError, get_preset
from audio.vae.layers import CausalConv1d, CausalConvTranspose1d, Snake
from audio.vae.model import LOGVAR_RANGE, CausalVAE, build_vae, pad_to_hop
from audio.vae.weights import load_vae, load_vae_state_dict, save_vae

__all__ = [
    "VAEConfig",
    "VAEConfigError",
    "VAEWeightsError",
    "VAE_PRESETS",
    "CausalVAE",
    "CausalConv1d",
    "CausalConvTranspose1d",
    "Snake",
    "get_preset",
    "pad_to_hop",
    "load_vae",
    "load_vae_state_dict",
    "save_vae",
    "build_vae",
    "LOGVAR_RANGE",
]
