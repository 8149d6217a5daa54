"""The pipeline config that composes vision, transformer, head and VAE, and the named presets.

A model folder is ``config.json`` (:meth:`GeneratorConfig.to_dict`) + ``model.safetensors``
(tokenizer aggregator, transformer, head, latent statistics) + ``vae.safetensors``.
"""

from __future__ import annotations

import dataclasses
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
        try:
            return cls(
                name=d["name"], stage=d["stage"], p_uncond=d["p_uncond"], guidance=d["guidance"],
                default_nfe=d["default_nfe"], init_seed=d.get("init_seed", 0), notes=d.get("notes", {}),
                vision=VisionConfig.from_dict(d["vision"]), vae=VAEConfig.from_dict(d["vae"]),
                transformer=TransformerConfig(**d["transformer"]), head=HeadConfig.from_dict(d["head"]),
            )
        except (KeyError, TypeError) as err:
            raise LivefoleyError(f"model config is malformed ({err}); re-export the model") from err


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


def model_preset(name: str) -> GeneratorConfig:
    try:
        return MODEL_PRESETS[name]()
    except KeyError:
        raise LivefoleyError(f"unknown model preset {name!r}; valid: {', '.join(sorted(MODEL_PRESETS))}") from None
