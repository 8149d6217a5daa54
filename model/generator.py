"""The streaming generator: frames in, 48 kHz stereo out, one 1600-sample chunk per frame.

``load_generator(name_or_path, device)`` returns a :class:`Generator`; ``generator.stream()``
gives a :class:`StreamSession` whose ``step(frame)`` runs Algorithm 3 of the paper:

1. feed the previous latent ``x_{i-1}`` → ``z_a`` (the BOS output for the first frame);
2. tokenize the frame → ``v_i``;
3. run ``v_i`` and the null token as two branches over the shared KV cache, extrapolate with ω,
   keep the conditional entry in the cache → ``z_v``;
4. sample ``x_i`` from the head conditioned on ``concat(z_a, z_v)`` (NFE 1–4);
5. decode ``x_i`` with the streaming VAE → ``(2, 1600)``.

``generate(frames)`` is the same loop with the vision tokens computed in batches (the vision path
is not autoregressive); noise comes from the same seeded generator in the same order, so
streaming and offline produce the same audio.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor

from audio.checkpoint import describe_mismatch, read_safetensors
from audio.contract import CONTRACT
from audio.errors import LivefoleyError, UsageError
from audio.files import atomic_path
from audio.vae import CausalVAE, load_vae
from model.config import MODEL_PRESETS, GeneratorConfig, model_preset
from model.reactor import SoundReactor

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "weights" / "default"


class CheckpointError(LivefoleyError):
    """A model folder is missing, malformed, or its tensors disagree with its config."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LivefoleyError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    return dev


def _as_rgb(frame) -> np.ndarray:
    image = getattr(frame, "image", frame)  # capture.Frame or a bare array
    if isinstance(image, torch.Tensor):
        image = image.cpu().numpy()
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise LivefoleyError(f"a frame must be an RGB uint8 array (H, W, 3); got {image.dtype} {image.shape}")
    return image


def _ordered_map(fn, items: Iterable, workers: int) -> Iterator:
    """``map(fn, items)`` with up to ``workers`` calls running at once on threads of their own (for
    work that releases the interpreter lock, such as torch's kernels); results in order, each as soon
    as it and those before it are done, and no more than ``workers`` items taken ahead.  One worker:
    a plain ``map`` in the calling thread.  Closed early, it waits for no running call."""
    if workers == 1:
        yield from map(fn, items)
        return
    import concurrent.futures as cf
    from collections import deque

    pending: deque = deque()
    pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="livefoley-vision-batch")
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            while pending and (len(pending) == workers or pending[0].done()):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class _Clock:
    """Per-component wall time of one step; synchronises CUDA only when timing is on."""

    def __init__(self, device: torch.device, enabled: bool) -> None:
        self.sync = device.type == "cuda" and enabled
        self.enabled = enabled
        self.ms: dict[str, float] = {}
        self._t = 0.0

    def start(self) -> None:
        self.ms = {}
        if self.enabled:
            if self.sync:
                torch.cuda.synchronize()
            self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        if self.enabled:
            if self.sync:
                torch.cuda.synchronize()
            now = time.perf_counter()
            self.ms[name] = self.ms.get(name, 0.0) + (now - self._t) * 1000
            self._t = now


class Generator:
    """A loaded model (trainable reactor + VAE) on one device, with default NFE and guidance."""

    def __init__(self, *, model: SoundReactor, vae: CausalVAE, device: torch.device) -> None:
        self.model = model.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        self.device = device
        self.config: GeneratorConfig = model.config
        # a diffusion-stage model has one valid NFE (its Heun schedule), whatever default_nfe says
        self.nfe = self.config.default_nfe if self.config.default_nfe in self.valid_nfe else self.valid_nfe[0]
        self.guidance = self.config.guidance
        self.audio_choice: dict | None = None  # what model.optimize.optimize_audio measured and installed

    @property
    def valid_nfe(self) -> tuple[int, ...]:
        return self.model.head.valid_nfe()

    def set_compute_dtype(self, dtype: torch.dtype) -> None:
        """Run the transformer, head, token embeddings and VAE in ``dtype`` (bf16 / fp16); the vision
        tokenizer keeps its own dtype (VisionConfig.dtype) and latent statistics stay fp32.  The stream
        session casts at the boundaries."""
        m = self.model
        for module in (m.transformer, m.head, m.vision_in, m.audio_in, self.vae):
            module.to(dtype)
        m.bos.data = m.bos.data.to(dtype)
        m.null_vision.data = m.null_vision.data.to(dtype)

    def check_nfe(self, nfe: int) -> int:
        if nfe not in self.valid_nfe:
            raise LivefoleyError(
                f"NFE {nfe} is not supported by model {self.config.name!r} (stage {self.config.stage}); "
                f"valid values: {', '.join(map(str, self.valid_nfe))}"
            )
        return nfe

    def stream(self, *, seed: int = 0, nfe: int | None = None, guidance: float | None = None,
               timing: bool = True) -> StreamSession:
        return StreamSession(self, seed=seed, nfe=self.nfe if nfe is None else nfe,
                             guidance=self.guidance if guidance is None else guidance, timing=timing)

    def fit(self, image: np.ndarray) -> np.ndarray:
        """A frame scaled to fit the vision input (aspect ratio kept): what ``tokenize`` and ``step``
        would do to it first, so fitting ahead (in another thread) gives the same tokens."""
        return self.model.tokenizer.backbone.fit(image)

    @torch.inference_mode()
    def tokenize(self, frames: Iterable, *, batch_size: int = 32, every: int = 1,
                 workers: int = 1) -> Iterator[Tensor]:
        """Vision tokens for a clip, computed in batches; yields (n, d_token) blocks in order.
        ``every`` N > 1: what the live engine's vision/N rungs feed the model — only every N-th frame
        is encoded (its change taken from the previous encoded one) and its token stands for the N
        frames from it on (the clip's length rounded up to a whole N).  ``workers`` > 1: that many
        batches go through the backbone at once, each on a thread of its own (the aggregator, which
        needs the previous batch's last grid, stays in order here); the same tokens."""
        if every < 1:
            raise ValueError(f"every must be ≥ 1, got {every}")
        if workers < 1:
            raise ValueError(f"workers must be ≥ 1, got {workers}")
        tok = self.model.tokenizer

        def batches() -> Iterator[list[np.ndarray]]:
            batch: list[np.ndarray] = []
            for i, frame in enumerate(frames):
                if i % every:
                    continue
                batch.append(_as_rgb(frame))
                if len(batch) == batch_size:
                    yield batch
                    batch = []
            if batch:
                yield batch

        def grids(batch: list[np.ndarray]) -> Tensor:
            with torch.inference_mode():  # thread-local: a worker thread needs its own
                return tok.grids(np.stack(batch))

        prev = None
        for block in _ordered_map(grids, batches(), workers):
            tokens = tok.tokens_from_grids(block, prev)
            prev = block[-1]
            yield tokens.repeat_interleave(every, dim=0) if every > 1 else tokens

    def generate(self, frames: Iterable, *, seed: int = 0, nfe: int | None = None, guidance: float | None = None,
                 batch_size: int = 32, progress=None) -> np.ndarray:
        """Offline: frames (any iterable of RGB arrays / Frames) → float32 audio (2, 1600·T)."""
        return self.generate_from_tokens(self.tokenize(frames, batch_size=batch_size), seed=seed, nfe=nfe,
                                         guidance=guidance, progress=progress)

    def generate_from_tokens(self, token_blocks: Iterable[Tensor], *, seed: int = 0, nfe: int | None = None,
                             guidance: float | None = None, progress=None) -> np.ndarray:
        """The autoregressive loop over blocks of vision tokens ((n, d_token) each, in frame order, as
        :meth:`tokenize` yields them) → float32 audio (2, 1600·T); ``progress(n)`` after each block."""
        chunks: list[np.ndarray] = []
        with self.stream(seed=seed, nfe=nfe, guidance=guidance, timing=False) as session:
            for tokens in token_blocks:
                # only the latent is fed back, so the VAE decodes the whole block in one call
                # (the streaming decoder gives the same samples for any chunking)
                latents = torch.cat([session.latent(v) for v in tokens])
                chunks.append(session.decode(latents))
                if progress is not None:
                    progress(len(tokens))
        if not chunks:
            raise LivefoleyError("no frames to generate from")
        return np.concatenate(chunks, axis=1)

    def save(self, folder: str | Path) -> Path:
        if self.audio_choice is not None and self.audio_choice["path"] != "eager":
            raise LivefoleyError("this generator's audio path was quantised for speed (--optimize): load the model "
                                 "again to save it")
        return save_model(folder, self.model, self.vae)


@dataclass
class StepStats:
    ms: dict[str, float]

    @property
    def token_ms(self) -> float:
        """From feeding x_{i-1} until x_i exists, including encoding frame i (the paper's token level)."""
        return sum(v for k, v in self.ms.items() if k != "vae")

    @property
    def waveform_ms(self) -> float:
        return self.token_ms + self.ms.get("vae", 0.0)


class StreamSession:
    """One causal stream: fresh KV cache, conv states, previous grid and seeded noise."""

    def __init__(self, gen: Generator, *, seed: int, nfe: int, guidance: float, timing: bool) -> None:
        self.gen = gen
        self.seed = seed
        self.nfe = gen.check_nfe(nfe)
        self.guidance = float(guidance)
        self.clock = _Clock(gen.device, timing)
        self._stack: ExitStack | None = None
        self.frames = 0

    # lifecycle ------------------------------------------------------------------------------------
    def __enter__(self) -> StreamSession:
        m = self.gen.model
        self._stack = ExitStack()
        self._stack.enter_context(torch.inference_mode())
        self._stack.enter_context(m.tokenizer.streaming())
        self._stack.enter_context(m.transformer.streaming(batch_size=1))
        self._stack.enter_context(self.gen.vae.streaming(batch_size=1))
        self._start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._stack is not None
        self._stack.close()
        self._stack = None

    def _start(self) -> None:
        m = self.gen.model
        self.noise = torch.Generator(device="cpu").manual_seed(self.seed)
        self.z_a = m.transformer.step(m.bos.view(1, 1, -1))[:, 0]  # F(BOS): (1, d)
        self.pending: Tensor | None = None  # x_{i-1}, fed at the start of the next step
        self.frames = 0

    def reset(self) -> None:
        """Forget the past (scene change): clear every streaming state and restart the noise."""
        m = self.gen.model
        with torch.inference_mode():
            m.tokenizer.reset_streaming()
            m.transformer.reset_streaming()
            self.gen.vae.reset_streaming()
            self._start()

    def configure(self, *, nfe: int | None = None, guidance: float | None = None) -> None:
        """Change NFE / guidance between frames without losing the stream state."""
        if nfe is not None:
            self.nfe = self.gen.check_nfe(nfe)
        if guidance is not None:
            self.guidance = float(guidance)

    @property
    def stats(self) -> StepStats:
        return StepStats(dict(self.clock.ms))

    # the per-frame step ---------------------------------------------------------------------------
    def step(self, frame) -> np.ndarray:
        """RGB uint8 (H, W, 3) frame (or capture.Frame) → float32 audio (2, 1600)."""
        self.clock.start()
        return self.decode(self.latent(self.encode(frame, lap=self.clock.lap)))

    def encode(self, frame, *, lap=None) -> Tensor:
        """Vision only: RGB uint8 (H, W, 3) frame (or capture.Frame) → its token (d_token,), for
        :meth:`step_token`.  Advances the tokenizer's Δ state (the next frame's difference is taken
        to this one).  It shares no state with :meth:`step_token`, so the live engine runs it on its
        own thread while the previous token is being turned into audio (never two at once, and never
        concurrently with :meth:`reset`)."""
        with torch.inference_mode():
            return self.gen.model.tokenizer.step(_as_rgb(frame), lap=lap)

    def step_token(self, v_token: Tensor) -> np.ndarray:
        """Same as :meth:`step` for an already computed vision token (d_token,)."""
        self.clock.start()
        return self.decode(self.latent(v_token))

    @torch.inference_mode()
    def latent(self, v_token: Tensor) -> Tensor:
        """Steps 1–4 of Algorithm 3: vision token → the frame's normalised latent x_i (1, 64)."""
        m = self.gen.model
        draws = m.head.noise_draws(self.nfe)
        noise = torch.randn((draws, 1, CONTRACT.latent_dim), generator=self.noise)
        x = self.latent_from_noise(v_token, noise.to(self.gen.device, m.vision_in.weight.dtype))
        self.frames += 1
        return x

    def latent_from_noise(self, v_token: Tensor, noise: Tensor) -> Tensor:
        """:meth:`latent` with the head's noise given (``(S, 1, 64)``, see ``DiffusionHead.sample``):
        the graph-capturable part of the step — no host reads, no RNG, no data-dependent branch
        (``torch.compile(..., fullgraph=True)`` captures it whole with timing off; tested)."""
        m = self.gen.model
        if self.pending is not None:  # 1. feed x_{i-1} (unless prefeed() did)
            self._feed_pending()
        guided = self.guidance != 1.0
        dtype = m.vision_in.weight.dtype  # the compute dtype (see Generator.set_compute_dtype)
        z = m.transformer.step(m.embed_vision(v_token.view(1, -1).to(dtype), guided=guided))  # 3. (1, G, d)
        z_v = z[:, 1] + self.guidance * (z[:, 0] - z[:, 1]) if guided else z[:, 0]
        self.clock.lap("transformer")
        x = m.head.sample(torch.cat((self.z_a, z_v), dim=-1), nfe=self.nfe, noise=noise)  # 4. (1, 64)
        self.pending = x
        self.clock.lap("head")
        return x

    def _feed_pending(self) -> None:
        m = self.gen.model
        self.z_a = m.transformer.step(m.audio_in(self.pending).view(1, 1, -1))[:, 0]
        self.pending = None

    @torch.inference_mode()
    def prefeed(self) -> None:
        """Step 1 of Algorithm 3 ahead of time: feed the last latent x_{i-1} to the transformer now,
        before frame i is there.  The next :meth:`latent` then starts at its vision token, so the
        time from a frame to its audio is shorter by one transformer token step; the result is the
        same (the same computation, done earlier).  The live engine calls it after each slot's write,
        while it waits for the next frame."""
        if self.pending is not None:
            self._feed_pending()

    @torch.inference_mode()
    def decode(self, latents: Tensor) -> np.ndarray:
        """Step 5: normalised latents (T, 64) in stream order → float32 audio (2, 1600·T)."""
        z = self.gen.model.denormalize(latents.float()).T[None]  # statistics are fp32
        wav = self.gen.vae.decode(z.to(self.gen.model.vision_in.weight.dtype))  # (1, 2, 1600·T)
        out = wav[0].float().cpu().numpy()
        self.clock.lap("vae")
        return out


# --- checkpoints -------------------------------------------------------------------------------------
def save_model(folder: str | Path, model: SoundReactor, vae: CausalVAE) -> Path:
    """Write ``config.json`` + ``model.safetensors`` + ``vae.safetensors`` (each atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    vae_tensors = {k: v.detach().cpu().contiguous() for k, v in vae.state_dict().items()}
    for name, write in (
        ("model.safetensors", lambda p: save_file(tensors, str(p))),
        ("vae.safetensors", lambda p: save_file(vae_tensors, str(p))),
        ("config.json", lambda p: p.write_text(json.dumps(model.config.to_dict(), indent=2))),
    ):
        with atomic_path(folder / name) as tmp:
            write(tmp)
    return folder


def _load_state(module: torch.nn.Module, tensors: dict[str, Tensor], where: Path) -> None:
    problems = describe_mismatch(module.state_dict(), tensors)
    if problems:
        raise CheckpointError(f"{where}: tensors do not match config.json ({problems})")
    module.load_state_dict(tensors, strict=True)


def build_model(config: GeneratorConfig, *, with_backbone: bool = True) -> SoundReactor:
    """A freshly initialised model; the initialisation is reproducible from ``config.init_seed``.
    ``with_backbone=False``: without the frozen DINOv2 (training on cached grids needs none)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.init_seed)
        return SoundReactor(config, with_backbone=with_backbone)


def with_vision_overrides(config: GeneratorConfig, *, dtype: str | None = None,
                          dinov2_weights: str | Path | None = None) -> GeneratorConfig:
    """Runtime overrides of the vision backbone: compute dtype, and a local DINOv2 weights file (the
    recorded fingerprint stays, so a file that differs from the training weights is refused)."""
    vision = config.vision
    if dtype is not None:
        vision = vision.replace(dtype=dtype)
    if dinov2_weights is not None:
        vision = vision.replace(weights=str(dinov2_weights))
    return config.replace(vision=vision)


def load_generator(name_or_path: str | Path = "default", device: str | torch.device = "auto", *,
                   vision_dtype: str | None = None, dinov2_weights: str | Path | None = None) -> Generator:
    """A model by preset name (``tiny``, ``base``: seeded, untrained weights), ``default`` (the
    model shipped with the package) or a model folder (``config.json`` + safetensors).
    ``vision_dtype`` ("fp32" / "bf16") overrides the DINOv2 compute dtype recorded in the config;
    ``dinov2_weights`` is a local DINOv2 weights file to use instead of the hub / seeded weights."""
    dev = resolve_device(device)
    name = str(name_or_path)
    if name == "default":
        if not (DEFAULT_MODEL_DIR / "config.json").exists():
            raise LivefoleyError(
                "no trained default model ships with this build (see README, 'Models and weights'): "
                "pass --model with a model folder you trained (`livefoley train ect` makes one) or a preset "
                f"({', '.join(sorted(MODEL_PRESETS))}: seeded, untrained weights — real code paths, meaningless sound)"
            )
        folder: Path | None = DEFAULT_MODEL_DIR
    elif name in MODEL_PRESETS:
        folder = None
    else:
        folder = Path(name)
        if not folder.is_dir():
            raise UsageError(
                f"model {name!r} is neither a preset ({', '.join(sorted(MODEL_PRESETS))}, default) "
                "nor a model folder"
            )
    if folder is None:
        log.warning("model preset %r has seeded, untrained weights: output is not meaningful audio", name)
        config = with_vision_overrides(model_preset(name), dtype=vision_dtype, dinov2_weights=dinov2_weights)
        model = build_model(config)
        with torch.random.fork_rng(devices=[]):  # the untrained VAE is reproducible too
            torch.manual_seed(config.init_seed + 1)
            vae = load_vae(config.vae)
    else:
        cfg_path = folder / "config.json"
        if not cfg_path.exists():
            raise CheckpointError(f"{folder} has no config.json; a model folder holds config.json + "
                                  "model.safetensors + vae.safetensors")
        try:
            config = with_vision_overrides(GeneratorConfig.from_dict(json.loads(cfg_path.read_text())),
                                           dtype=vision_dtype, dinov2_weights=dinov2_weights)
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{cfg_path} is not valid JSON ({err})") from err
        model = build_model(config)
        for f in ("model.safetensors", "vae.safetensors"):
            if not (folder / f).exists():
                raise CheckpointError(f"{folder} is missing {f}")
        _load_state(model, read_safetensors(folder / "model.safetensors", what="model weights"),
                    folder / "model.safetensors")
        vae = load_vae(config.vae, folder / "vae.safetensors")
    return Generator(model=model.to(dev), vae=vae.to(dev), device=dev)
