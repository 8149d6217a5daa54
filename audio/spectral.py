"""The spectral codec: a causal, streaming 48 kHz stereo VAE that trains on two CPU cores.

Same interface and contract as the Oobleck VAE (:mod:`audio.vae`): ``encode`` ``(B, 2, N) →
(B, 64, N / 1600)`` (the bottleneck mean), ``encode_dist`` → ``(mean, logvar)``, ``decode``
``(B, 64, T) → (B, 2, 1600·T)``, and ``with codec.streaming(batch):`` where one latent in gives
exactly 1600 samples out, identical to offline decoding.  It loads through :func:`audio.vae.load_vae`
(its config says ``"type": "livefoley-spectral"``).

Why it exists: a waveform decoder (Oobleck) must learn phase at 48 kHz and needs 10⁵–10⁶ GPU steps.
Here the networks run at the *frame* rate and learn only what a 64-d latent can carry: the
log-magnitude spectrogram of each channel.  Phase is not learned; it is reconstructed causally.

* Analysis: per channel a Hann STFT, ``n_fft`` = 800, hop 200 — eight sub-frames per latent.
* Encoder (per latent, causal): the log magnitudes of the eight frames that *end* inside the latent's
  1600 samples (the first reaches 600 samples into the previous latent: the streaming state) →
  a shared per-frame projection → an MLP over the eight → ``mean ‖ logvar`` (128).
* Decoder (causal over latents): a convolution over the current and ``context − 1`` previous latents
  → an MLP → per sub-frame and channel the log magnitude of the frame that *starts* at that
  sub-frame.  Such a frame reaches 600 samples into the next latent's time; the overlap-add tail
  carries it there, exactly like the tail of a causal transposed convolution.
* Phase (deterministic, causal, shared by the two channels — the world's sources are panned mono):
  peak picking on the summed magnitude, quadratic interpolation of each peak's frequency, and a
  phase vocoder with identity phase locking: every bin takes the phase of its nearest peak, advanced
  by that peak's frequency times the hop.  Tones therefore stay coherent from frame to frame
  (a shaped-noise codec is what this is *not*), noise stays noise-like.
* Synthesis: inverse FFT of magnitude·e^{iφ}, Hann synthesis window, overlap-add normalised by the
  window's summed square.

Streaming state: the encoder keeps the last ``n_fft − sub_hop`` input samples; the decoder keeps
the previous ``context − 1`` latents, the phase of the last sub-frame and the overlap-add tail.
Offline decoding *is* the streaming path run one latent at a time from a zero state, so the two are
bit-identical (the peak picking makes discrete choices; the same arithmetic avoids any flip).

Training needs no phase at all: :meth:`SpectralCodec.magnitude_loss` compares predicted and true
log magnitudes (L1) plus a spectral-convergence term on linear magnitudes, so a step costs
milliseconds per latent and the model converges in thousands, not millions, of steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audio.codec import StreamingCodec
from audio.contract import CONTRACT
from audio.errors import LivefoleyError

__all__ = ["SPECTRAL_TYPE", "SpectralCodecConfig", "SpectralCodec"]

SPECTRAL_TYPE = "livefoley-spectral"
"""The encoder/decoder ``type`` that marks a spectral codec in a stable-audio-tools style config."""

BAND_WEIGHT = 3.0
"""Weight of the band-energy term of :meth:`SpectralCodec.magnitude_loss`.  Per-bin L1 of log
magnitudes seeks the median, which for a tonal line whose exact bin is uncertain (a laser's fast
chirp) is the background: the line vanishes.  Band power is mean-seeking and keeps it audible."""

_LOGVAR_RANGE = (-30.0, 20.0)  # the same clamp as the Oobleck bottleneck (audio.vae.LOGVAR_RANGE)


@dataclass(frozen=True)
class SpectralCodecConfig:
    """Everything that determines the spectral codec's architecture."""

    n_fft: int = 800
    sub_hop: int = 200
    frame_dim: int = 128  # per-frame projection width (encoder input, decoder output stage)
    frame_hidden: int = 512  # hidden width of the per-frame output MLP (sharp spectral lines)
    width: int = 512  # MLP width
    depth: int = 2  # residual MLP blocks in encoder and decoder
    context: int = 4  # latents the decoder sees: the current one and context − 1 before it
    log_floor: float = 1e-5  # magnitudes are modelled as ln(|X| + log_floor)
    latent_dim: int = CONTRACT.latent_dim
    audio_channels: int = CONTRACT.channels
    sample_rate: int = CONTRACT.sample_rate
    hop: int = CONTRACT.hop
    causal: bool = True

    def __post_init__(self) -> None:
        problems = []
        for name in ("n_fft", "sub_hop", "frame_dim", "frame_hidden", "width", "context", "latent_dim",
                     "audio_channels", "sample_rate", "hop"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                problems.append(f"{name} must be a positive integer (got {v!r})")
        if not problems:
            if self.hop % self.sub_hop:
                problems.append(f"hop {self.hop} must be a multiple of sub_hop {self.sub_hop}")
            if self.n_fft % self.sub_hop or self.n_fft < self.sub_hop:
                problems.append(f"n_fft {self.n_fft} must be a multiple of sub_hop {self.sub_hop}")
        if not isinstance(self.depth, int) or self.depth < 0:
            problems.append(f"depth must be a non-negative integer (got {self.depth!r})")
        if not (isinstance(self.log_floor, float | int) and self.log_floor > 0):
            problems.append(f"log_floor must be positive (got {self.log_floor!r})")
        if not self.causal:
            problems.append("causal=false: the spectral codec is causal by construction")
        if problems:
            raise LivefoleyError("invalid spectral codec config: " + "; ".join(problems))

    @property
    def frames_per_latent(self) -> int:
        return self.hop // self.sub_hop

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def lookahead(self) -> int:
        """Samples past a latent's end that its last decoder frame covers (the overlap-add tail)."""
        return self.n_fft - self.sub_hop

    # ---- serialisation: the same stable-audio-tools outline as the Oobleck config -------------

    def to_dict(self) -> dict[str, Any]:
        arch = {k: v for k, v in asdict(self).items()
                if k not in ("latent_dim", "audio_channels", "sample_rate", "hop")}
        return {
            "model_type": "autoencoder",
            "sample_size": self.sample_rate,
            "sample_rate": self.sample_rate,
            "audio_channels": self.audio_channels,
            "model": {
                "encoder": {"type": SPECTRAL_TYPE, "config": {**arch, "in_channels": self.audio_channels,
                                                              "latent_dim": 2 * self.latent_dim}},
                "decoder": {"type": SPECTRAL_TYPE, "config": {**arch, "out_channels": self.audio_channels,
                                                              "latent_dim": self.latent_dim}},
                "bottleneck": {"type": "vae"},
                "latent_dim": self.latent_dim,
                "downsampling_ratio": self.hop,
                "io_channels": self.audio_channels,
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "config") -> SpectralCodecConfig:
        try:
            model = d["model"]
            enc, dec = dict(model["encoder"]["config"]), dict(model["decoder"]["config"])
            for k in ("in_channels", "out_channels", "latent_dim"):
                enc.pop(k, None)
                dec.pop(k, None)
            if enc != dec:
                raise LivefoleyError(f"{source}: spectral encoder and decoder configs differ ({enc} vs {dec})")
            return cls(**enc, latent_dim=int(model["latent_dim"]), audio_channels=int(d["audio_channels"]),
                       sample_rate=int(d["sample_rate"]), hop=int(model["downsampling_ratio"]))
        except (KeyError, TypeError) as err:
            raise LivefoleyError(f"{source}: malformed spectral codec config ({err})") from None


def _hann(n: int) -> Tensor:
    return torch.hann_window(n, periodic=True, dtype=torch.float32)


def _log_bands(bins: int, n: int) -> Tensor:
    """``(bins, ≤ n)`` 0/1 matrix grouping FFT bins into log-spaced bands (DC in the first)."""
    edges = torch.unique(torch.logspace(0, math.log10(bins), n + 1).floor().long().clamp(max=bins))
    idx = torch.bucketize(torch.arange(bins), edges[1:-1], right=True)
    return F.one_hot(idx, int(idx.max()) + 1).float()


def _group_bands(n: int, groups: int) -> Tensor:
    """``(n, groups)`` 0/1 matrix joining ``n`` consecutive bands into ``groups`` contiguous groups."""
    idx = torch.arange(n) * groups // n
    return F.one_hot(idx, groups).float()


class _ResidualMLP(nn.Module):
    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
            for _ in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = x + block(x)
        return x


class SpectralCodec(StreamingCodec):
    """The spectral codec (see the module docstring).  Parameter names are its own; a foreign
    checkpoint does not fit it, and :func:`audio.vae.load_vae` says so."""

    def __init__(self, config: SpectralCodecConfig) -> None:
        c = config
        super().__init__(hop=c.hop, latent_dim=c.latent_dim, sample_rate=c.sample_rate,
                         audio_channels=c.audio_channels)
        self.config = c
        k, feat = c.frames_per_latent, c.audio_channels * c.bins
        self.register_buffer("band_matrix", _log_bands(c.bins, 48), persistent=False)
        n_bands = self.band_matrix.shape[1]
        self.register_buffer("octave_matrix", _group_bands(n_bands, 8), persistent=False)
        # per frame: the log magnitudes and the log band energies of both channels (the bands are
        # robust to the noise of single bins, so sparse tonal events stand out from the start)
        self.enc_frame = nn.Sequential(nn.Linear(feat + c.audio_channels * n_bands, c.frame_dim),
                                       nn.LayerNorm(c.frame_dim), nn.GELU())
        self.enc_in = nn.Linear(k * c.frame_dim, c.width)
        self.enc_mlp = _ResidualMLP(c.width, c.depth)
        self.enc_out = nn.Sequential(nn.LayerNorm(c.width), nn.Linear(c.width, 2 * c.latent_dim))
        self.dec_in = nn.Conv1d(c.latent_dim, c.width, c.context)
        self.dec_mlp = _ResidualMLP(c.width, c.depth)
        self.dec_frames = nn.Sequential(nn.LayerNorm(c.width), nn.Linear(c.width, k * c.frame_dim), nn.GELU())
        self.dec_out = nn.Sequential(nn.Linear(c.frame_dim, c.frame_hidden), nn.GELU(),
                                     nn.Linear(c.frame_hidden, feat))
        with torch.no_grad():
            # He initialisation (PyTorch's default shrinks every layer by ~√3: after the decoder's
            # six layers the output barely depends on the latent, the network learns the mean
            # spectrum and never the events); the residual blocks start as identities.
            for m in self.modules():
                if isinstance(m, nn.Linear | nn.Conv1d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)
            for mlp in (self.enc_mlp, self.dec_mlp):
                for block in mlp.blocks:
                    nn.init.zeros_(block[-1].weight)
            # The posterior starts narrow (σ ≈ 0.02): with σ = 1 at initialisation the sampled
            # latent is all noise, the decoder learns to ignore it and the encoder collapses.
            self.enc_out[1].weight[c.latent_dim :].zero_()
            self.enc_out[1].bias[c.latent_dim :].fill_(-8.0)
            self.dec_out[-1].bias.fill_(math.log(c.log_floor) / 2)  # start quiet rather than at ln 1
        self.register_buffer("window", _hann(c.n_fft), persistent=False)
        wss = (_hann(c.n_fft) ** 2).reshape(c.n_fft // c.sub_hop, c.sub_hop).sum(0)
        self.register_buffer("ola_norm", wss, persistent=False)
        self._stream: dict[str, Tensor] | None = None

    # ---- analysis ------------------------------------------------------------------------------

    def log_magnitudes(self, wav: Tensor) -> Tensor:
        """``(B, C, L)`` → ``ln(|STFT| + floor)`` of the frames starting every sub-hop whose window
        fits in ``wav``: ``(B, C, (L − n_fft) / sub_hop + 1, bins)``."""
        c = self.config
        frames = wav.unfold(-1, c.n_fft, c.sub_hop) * self.window
        return torch.log(torch.fft.rfft(frames, dim=-1).abs() + c.log_floor)

    # ---- encoder -------------------------------------------------------------------------------

    def _encode_raw(self, wav: Tensor) -> Tensor:
        c = self.config
        b, t = wav.shape[0], wav.shape[-1] // c.hop
        if self._stream is not None:
            x = torch.cat((self._stream["enc_tail"], wav), dim=-1)
            self._stream["enc_tail"].copy_(x[..., -c.lookahead:])
        else:
            x = F.pad(wav, (c.lookahead, 0))
        logm = self.log_magnitudes(x)  # (B, C, 8T, bins): frame j ends at sample (j + 1)·sub_hop
        bands = torch.log((2 * logm).exp() @ self.band_matrix + c.log_floor**2) / 2
        feats = torch.cat(((logm + 4) / 3, (bands + 4) / 3), dim=-1)  # roughly zero-mean, unit scale
        feats = feats.permute(0, 2, 1, 3).reshape(b, t * c.frames_per_latent, -1)
        h = self.enc_frame(feats).reshape(b, t, -1)
        h = self.enc_out(self.enc_mlp(self.enc_in(h)))  # (B, T, 2·latent)
        return h.transpose(1, 2)

    def encode_dist(self, wav: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C, N)`` → ``(mean, logvar)``, each ``(B, latent_dim, N / hop)``; logvar clamped."""
        self._check_wave(wav)
        mean, logvar = self._encode_raw(wav).split(self.latent_dim, dim=1)
        return mean, logvar.clamp(*_LOGVAR_RANGE)

    def encode(self, wav: Tensor) -> Tensor:
        """``(B, C, N)`` with ``N % hop == 0`` → mean latents ``(B, latent_dim, N / hop)``."""
        self._check_wave(wav)
        return self._encode_raw(wav)[:, : self.latent_dim]

    # ---- decoder: latents → log magnitudes (differentiable; what training fits) ----------------

    def predict_log_magnitudes(self, z: Tensor, history: Tensor | None = None) -> Tensor:
        """``(B, latent, T)`` → predicted ``ln(|X| + floor)`` of the frames starting at each sub-hop,
        ``(B, C, 8T, bins)``.  ``history``: the ``context − 1`` latents before ``z`` (zeros if None)."""
        c = self.config
        b, _, t = z.shape
        if history is None:
            history = z.new_zeros(b, c.latent_dim, c.context - 1)
        h = self.dec_in(torch.cat((history, z), dim=-1)).transpose(1, 2)  # (B, T, width)
        h = self.dec_frames(self.dec_mlp(h)).reshape(b, t * c.frames_per_latent, c.frame_dim)
        out = self.dec_out(h).reshape(b, t * c.frames_per_latent, c.audio_channels, c.bins)
        return out.permute(0, 2, 1, 3)

    def magnitude_loss(self, z: Tensor, wav: Tensor) -> Tensor:
        """Training loss for latents ``z`` ``(B, latent, T)`` of ``wav`` ``(B, C, T·hop + lookahead)``:
        L1 of log magnitudes plus spectral convergence of linear magnitudes."""
        c = self.config
        t = z.shape[-1]
        if wav.shape[-1] != t * c.hop + c.lookahead:
            raise LivefoleyError(f"magnitude_loss needs T·hop + {c.lookahead} samples, got {wav.shape[-1]}")
        target = self.log_magnitudes(wav)
        pred = self.predict_log_magnitudes(z)
        log_l1 = (pred - target).abs().mean()
        lin_p, lin_t = pred.exp(), target.exp()
        sc = torch.linalg.vector_norm(lin_p - lin_t) / torch.linalg.vector_norm(lin_t).clamp_min(1e-6)
        # Band energies in dB-like units: per-bin L1 of log magnitudes aims at the median, which for
        # noise sits below its power; summed band power keeps the level (and the quiet stretches) right.
        floor = c.log_floor**2
        bands = self.band_matrix.to(lin_p.dtype)
        pow_p, pow_t = lin_p.square() @ bands, lin_t.square() @ bands  # (B, C, 8T, bands)
        band_l1 = (torch.log(pow_p + floor) - torch.log(pow_t + floor)).abs().mean()
        # … and over whole latents in octave bands: a fast chirp crosses a fine band within one
        # sub-frame, so only energy pooled in time and frequency makes its presence certain.
        k = c.frames_per_latent
        octaves = self.octave_matrix.to(lin_p.dtype)
        coarse_p = (pow_p.unflatten(2, (t, k)).sum(3)) @ octaves
        coarse_t = (pow_t.unflatten(2, (t, k)).sum(3)) @ octaves
        coarse_l1 = (torch.log(coarse_p + floor) - torch.log(coarse_t + floor)).abs().mean()
        return log_l1 + sc + BAND_WEIGHT * (band_l1 + coarse_l1)

    # ---- decoder: magnitudes → waveform (phase vocoder, streaming) -----------------------------

    def _new_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        c = self.config
        return {
            "enc_tail": torch.zeros(batch, c.audio_channels, c.lookahead, device=device, dtype=dtype),
            "history": torch.zeros(batch, c.latent_dim, c.context - 1, device=device, dtype=dtype),
            "phase": torch.zeros(batch, c.bins, device=device, dtype=torch.float64),
            "tail": torch.zeros(batch, c.audio_channels, c.lookahead, device=device, dtype=torch.float32),
        }

    def _phase_plan(self, mag: Tensor) -> tuple[Tensor, Tensor]:
        """Peak analysis of magnitudes ``(B, C, K, bins)`` → for every bin of every frame the index of
        its nearest peak ``(B, K, bins)`` and the phase advance of that peak over one sub-hop."""
        c = self.config
        s = torch.log(mag.detach().double().sum(1) + 1e-12)  # (B, K, bins); phases get no gradient
        left = F.pad(s[..., :-1], (1, 0), value=-math.inf)
        right = F.pad(s[..., 1:], (0, 1), value=-math.inf)
        peak = (s > left) & (s >= right)
        peak[..., 0] |= ~peak.any(-1)  # a flat frame: one nominal peak at DC
        idx = torch.arange(c.bins, device=mag.device).expand_as(s)
        last = torch.where(peak, idx, -1).cummax(-1).values  # nearest peak at or below each bin
        nxt = torch.where(peak, idx, c.bins).flip(-1).cummin(-1).values.flip(-1)  # … at or above
        use_next = (last < 0) | ((nxt < c.bins) & (nxt - idx < idx - last))
        region = torch.where(use_next, nxt, last)
        a, b, d = (t.gather(-1, region) for t in (left, s, right))
        a, d = torch.where(torch.isfinite(a), a, b), torch.where(torch.isfinite(d), d, b)
        den = a - 2 * b + d
        delta = torch.where(den < -1e-12, 0.5 * (a - d) / den.clamp(max=-1e-12), torch.zeros_like(den))
        freq = region.double() + delta.clamp(-0.5, 0.5)  # fractional bin of the region's peak
        return region, 2 * math.pi * freq * c.sub_hop / c.n_fft

    def _decode_one(self, z: Tensor, st: dict[str, Any]) -> Tensor:
        """One latent ``(B, latent, 1)`` → ``(B, C, hop)``, advancing the state ``st`` in place."""
        c = self.config
        logm = self.predict_log_magnitudes(z, st["history"]).float()
        st["history"] = torch.cat((st["history"][..., 1:], z), dim=-1) if c.context > 1 else st["history"]
        return self.synthesise((logm.exp() - c.log_floor).clamp_min(0.0), st)

    def synthesise(self, mag: Tensor, st: dict[str, Any]) -> Tensor:
        """Magnitudes ``(B, C, frames_per_latent, bins)`` of one latent's frames → ``(B, C, hop)``
        samples: phase vocoder + overlap-add, advancing the stream state ``st`` in place."""
        c = self.config
        region, advance = self._phase_plan(mag)
        phase = st["phase"]
        phases = []
        for k in range(c.frames_per_latent):
            phase = torch.remainder(phase.gather(-1, region[:, k]) + advance[:, k], 2 * math.pi)
            phases.append(phase)
        st["phase"] = phase
        ph = torch.stack(phases, dim=1)[:, None]  # (B, 1, K, bins)
        spec = torch.polar(mag.double(), ph.expand_as(mag).contiguous()).to(torch.complex64)
        frames = torch.fft.fftshift(torch.fft.irfft(spec, n=c.n_fft, dim=-1), dim=-1) * self.window
        b, ch, k, n = frames.shape
        # overlap-add: frame j covers [j·sub_hop, j·sub_hop + n_fft) of this latent's time
        out = F.fold(frames.reshape(b * ch, k, n).transpose(1, 2), output_size=(1, c.hop + c.lookahead),
                     kernel_size=(1, n), stride=(1, c.sub_hop)).reshape(b, ch, c.hop + c.lookahead)
        out[..., : c.lookahead] += st["tail"]
        st["tail"] = out[..., c.hop:].clone()
        norm = self.ola_norm.repeat(c.frames_per_latent)
        return out[..., : c.hop] / norm

    def decoding_modules(self) -> list[nn.Module]:
        return [self.dec_in, self.dec_mlp, self.dec_frames, self.dec_out]

    def decode(self, z: Tensor) -> Tensor:
        """``(B, latent_dim, T)`` → waveform ``(B, C, T · hop)`` (one latent at a time, so offline
        decoding and streaming are the same arithmetic)."""
        self._check_latents(z)
        p = self.dec_in.weight  # (a parameter no optimisation replaces)
        st = self._stream if self._stream is not None else self._new_state(z.shape[0], p.device, p.dtype)
        z = z.to(p.dtype)
        return torch.cat([self._decode_one(z[..., t : t + 1], st) for t in range(z.shape[-1])], dim=-1)

    # ---- streaming state: the encoder's input tail, the decoder's context, phases and overlap ----

    def _start_stream(self, batch_size: int) -> None:
        p = self.dec_in.weight  # (a parameter no optimisation replaces)
        self._stream = self._new_state(batch_size, p.device, p.dtype)

    def _reset_stream(self) -> None:
        self._start_stream(self._stream_batch)

    def _stop_stream(self) -> None:
        self._stream = None

    def num_parameters(self) -> dict[str, int]:
        enc = sum(p.numel() for n, p in self.named_parameters() if n.startswith("enc_"))
        dec = sum(p.numel() for n, p in self.named_parameters() if n.startswith("dec_"))
        return {"encoder": enc, "decoder": dec, "total": enc + dec}
