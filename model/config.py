"""The pipeline config that composes vision, transformer, head and VAE, and the named presets.

A model folder is ``config.json`` (:meth:`GeneratorConfig.to_dict`) + ``model.safetensors``
(tokenizer aggregator, transformer, head, latent statistics) + ``vae.safetensors``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from audio.contract import CONTRACT
from audio.errors import LivefoleyError
from audio.vae import VAE_PRESETS, VAEConfig
from model.head import HeadConfig
from model.transformer import TransformerConfig
from model.vision import VISION_PRESETS, VisionConfig

FORMAT = "livefoley-model"
FORMAT_VERSION = 1
STAGES = ("diffusion", "consistency")
MAX_PARAMETERS = 2_000_000_000  # far above `base` (~0.1 B): a config beyond it is a typo, refused before allocating


def _check_numbers(section: str, cls, values: dict) -> None:
    """The int / float fields of dataclass ``cls`` in a config.json section hold numbers of that kind
    (a whole number ≥ 0, a finite number): a string or 1e9 written for a width is named, not a
    traceback from deep inside a layer."""
    if not isinstance(values, dict):
        raise LivefoleyError(f"model config: {section} must be an object of settings, got {values!r}")
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        v = values[f.name]
        if f.type == "int" and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise LivefoleyError(f"model config: {section}.{f.name} must be a whole number ≥ 0, got {v!r}; "
                                 "fix config.json or re-export the model")
        if f.type == "float" and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)):
            raise LivefoleyError(f"model config: {section}.{f.name} must be a finite number, got {v!r}; "
                                 "fix config.json or re-export the model")


def approx_parameters(c: GeneratorConfig) -> int:
    """Trainable parameters the config describes, roughly (matrices only): what loading would allocate."""
    t, h, v = c.transformer, c.head, c.vision
    return (t.n_layers * (4 * t.d_model**2 + 3 * t.d_model * t.mlp_hidden)
            + h.depth * 4 * h.width**2 + h.width * (h.cond_dim + h.freq_dim)
            + v.agg_layers * 12 * v.d_proj**2 + v.d_proj * v.d_token
            + v.cell_readout * (v.d_proj + v.grid_size[0] * v.grid_size[1] * v.d_token))


@dataclass(frozen=True)
class GeneratorConfig:
    name: str
    vision: VisionConfig
    vae: VAEConfig
    transformer: TransformerConfig
    head: HeadConfig
    stage: str = "consistency"  # "diffusion" (Heun sampler) or "consistency" (after ECT: NFE 1/2/4)
    p_uncond: float = 0.1  # training: probability that a whole clip's vision tokens become the null token
    guidance: float = 3.0  # ω of latent CFG at inference (1 = off)
    default_nfe: int = 1
    init_seed: int = 0  # seed of the random initialisation (untrained presets are reproducible)
    notes: dict = field(default_factory=dict)  # provenance: training data, steps, metrics

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise LivefoleyError(f"unknown stage {self.stage!r}; valid: {', '.join(STAGES)}")
        if self.vae.latent_dim != CONTRACT.latent_dim or self.vae.hop != CONTRACT.hop:
            raise LivefoleyError(
                f"VAE latent {self.vae.latent_dim}×hop {self.vae.hop} breaks the timing contract "
                f"({CONTRACT.latent_dim}×{CONTRACT.hop})"
            )
        if self.head.cond_dim != 2 * self.transformer.d_model:
            raise LivefoleyError(
                f"head.cond_dim {self.head.cond_dim} must be 2·d_model = {2 * self.transformer.d_model}"
            )
        n = approx_parameters(self)
        if n > MAX_PARAMETERS:
            raise LivefoleyError(
                f"model config describes about {n / 1e9:.0f} billion parameters (transformer d_model "
                f"{self.transformer.d_model} × {self.transformer.n_layers} layers, head width {self.head.width}); "
                "no livefoley model is that large — check config.json")

    def replace(self, **changes) -> GeneratorConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "stage": self.stage,
            "p_uncond": self.p_uncond,
            "guidance": self.guidance,
            "default_nfe": self.default_nfe,
            "init_seed": self.init_seed,
            "notes": self.notes,
            "vision": self.vision.to_dict(),
            "vae": self.vae.to_dict(),
            "transformer": self.transformer.to_dict(),
            "head": self.head.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> GeneratorConfig:
        if d.get("format") != FORMAT:
            raise LivefoleyError(f"not a livefoley model config (format {d.get('format')!r}, expected {FORMAT!r})")
        if d.get("format_version", 0) > FORMAT_VERSION:
            raise LivefoleyError(
                f"model config version {d['format_version']} is newer than this livefoley understands "
                f"({FORMAT_VERSION}); upgrade livefoley"
            )
        for section, kind in (("transformer", TransformerConfig), ("head", HeadConfig), ("vision", VisionConfig)):
            _check_numbers(section, kind, d.get(section, {}))
        try:
            return cls(
                name=d["name"], stage=d["stage"], p_uncond=d["p_uncond"], guidance=d["guidance"],
                default_nfe=d["default_nfe"], init_seed=d.get("init_seed", 0), notes=d.get("notes", {}),
                vision=VisionConfig.from_dict(d["vision"]), vae=VAEConfig.from_dict(d["vae"]),
                transformer=TransformerConfig(**d["transformer"]), head=HeadConfig.from_dict(d["head"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            what = f"missing {err}" if isinstance(err, KeyError) else str(err)
            raise LivefoleyError(f"model config is malformed ({what}); fix config.json or re-export the "
                                 "model") from None


def _tiny() -> GeneratorConfig:
    d = 256
    return GeneratorConfig(
        name="tiny",
        vision=VISION_PRESETS["tiny"],
        vae=VAE_PRESETS["tiny"],
        transformer=TransformerConfig(d_model=d, n_layers=4, n_heads=4, mlp_hidden=704),
        head=HeadConfig(cond_dim=2 * d, width=256, depth=3),
    )


def _base() -> GeneratorConfig:
    d = 768
    return GeneratorConfig(
        name="base",
        vision=VISION_PRESETS["base"],
        vae=VAE_PRESETS["sr-causal"],
        transformer=TransformerConfig(d_model=d, n_layers=12, n_heads=12, mlp_hidden=2048),
        head=HeadConfig(cond_dim=2 * d, width=1024, depth=6),
    )


MODEL_PRESETS = {"tiny": _tiny, "base": _base}


def vision_input_size(model: str) -> tuple[int, int]:
    """(h, w) the vision encoder of ``model`` (a preset name, ``default`` or a model folder) takes, read
    from its config.json without loading the model; the `base` preset's 224×392 when there is no such
    model (the command that loads it reports a bad model itself)."""
    import json
    from pathlib import Path

    if model in MODEL_PRESETS:
        return model_preset(model).vision.input_size
    from model.generator import DEFAULT_MODEL_DIR

    folder = DEFAULT_MODEL_DIR if model == "default" else Path(model)
    try:
        h, w = json.loads((folder / "config.json").read_text())["vision"]["input_size"]
        return int(h), int(w)
    except (OSError, ValueError, KeyError, TypeError):  # no such model: the base preset's size
        return VISION_PRESETS["base"].input_size


def model_preset(name: str) -> GeneratorConfig:
    try:
        return MODEL_PRESETS[name]()
    except KeyError:
        raise LivefoleyError(f"unknown model preset {name!r}; valid: {', '.join(sorted(MODEL_PRESETS))}") from None
