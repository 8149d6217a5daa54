"""The frame tokenizer (model/vision.py): frozen DINOv2 wrapper, weights, preprocessing, tokens.

Everything runs the real timm ViT-S/14-reg4 with seeded weights at a small input size (56×84 →
4×6 patches → 2×3 pooled grid) so that the file stays fast on 2 shared cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm.models
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from model.dinov2 import file_sha256, seeded_state_dict, tensors_fingerprint
from model.vision import (
    VISION_PRESETS,
    DinoBackbone,
    FrameTokenizer,
    VisionConfig,
    VisionError,
    vision_preset,
)

CFG = VisionConfig(input_size=(56, 84), weights="seeded:0", dtype="fp32")
H, W = CFG.input_size


def clip(n: int = 6, size: tuple[int, int] = (90, 160), seed: int = 0) -> np.ndarray:
    """(n, h, w, 3) uint8: a colour gradient with two boxes moving right by 12 px per frame."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.full_like(xx, 60)], -1).astype(np.uint8)
    rng = np.random.default_rng(seed)
    out = np.repeat(base[None], n, axis=0)
    for t in range(n):
        for j, colour in enumerate(rng.integers(0, 256, (2, 3), dtype=np.uint8)):
            x = (12 * t + 50 * j) % (w - 30)
            out[t, 10 + 40 * j:40 + 40 * j, x:x + 30] = colour
    return out


@pytest.fixture(scope="module")
def backbone() -> DinoBackbone:
    return DinoBackbone(config=CFG)


@pytest.fixture()
def tok(backbone: DinoBackbone) -> FrameTokenizer:
    torch.manual_seed(0)
    return FrameTokenizer(CFG, backbone=backbone)


@pytest.fixture(scope="module")
def weights_file(backbone: DinoBackbone, tmp_path_factory) -> Path:
    """The seeded weights written as a timm-layout model.safetensors (518×518 position grid)."""
    path = tmp_path_factory.mktemp("dinov2") / "model.safetensors"
    save_file(seeded_state_dict(backbone.vit, 0), str(path))
    return path


# --- frozen backbone --------------------------------------------------------------------------------
def test_backbone_is_frozen(backbone: DinoBackbone, tok: FrameTokenizer) -> None:
    assert all(not p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not backbone.training and not backbone.vit.training
    tok.train()
    assert tok.training and not backbone.training and not backbone.vit.training
    with torch.enable_grad():
        grid = backbone(backbone.preprocess(clip(2)))
    assert grid.shape == (2, *CFG.grid_size, 384) and not grid.requires_grad
    assert backbone.num_prefix_tokens == 5  # CLS + 4 registers, dropped from the grid


def test_grid_is_the_pooled_patch_grid_not_cls(backbone: DinoBackbone) -> None:
    images = backbone.preprocess(clip(2))
    with torch.no_grad():
        feats = backbone.vit.forward_features(images)  # (2, 5 + 4·6, 384)
    patches = feats[:, 5:].reshape(2, 4, 6, 384)
    expected = F.avg_pool2d(patches.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    torch.testing.assert_close(backbone(images), expected)


# --- preprocessing ----------------------------------------------------------------------------------
SIZES = [(720, 1280), (1080, 1920), (480, 640), (640, 360), (37, 53), (5, 7), (56, 84)]


@pytest.mark.parametrize("size", SIZES)
def test_preprocess_any_size_gives_input_size(backbone: DinoBackbone, size: tuple[int, int]) -> None:
    frames = np.random.default_rng(1).integers(0, 256, (2, *size, 3), dtype=np.uint8)
    images = backbone.preprocess(frames)
    assert images.shape == (2, 3, H, W) and images.dtype == torch.float32
    assert torch.isfinite(images).all()
    torch.testing.assert_close(backbone.preprocess(torch.from_numpy(frames)), images)


def test_preprocess_mixed_list_and_reused_buffer(backbone: DinoBackbone) -> None:
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(720, 1280, 3), (33, 91, 3), (600, 200, 3)]]
    images = backbone.preprocess(frames)
    assert images.shape == (3, 3, H, W)
    buf = torch.full((1, 3, H, W), 7.0)
    for i, f in enumerate(frames):  # a reused buffer gives the same as a fresh one (borders re-zeroed)
        assert backbone.preprocess([f], out=buf).data_ptr() == buf.data_ptr()
        torch.testing.assert_close(buf[0], images[i])


def test_letterbox_geometry_and_normalisation(backbone: DinoBackbone) -> None:
    cfg = timm.models.get_pretrained_cfg("vit_small_patch14_reg4_dinov2.lvd142m")
    assert backbone.mean == pytest.approx(cfg.mean) and backbone.std == pytest.approx(cfg.std)
    colour = np.array([255, 0, 128], np.uint8)
    frame = np.broadcast_to(colour, (480, 640, 3)).copy()  # 4:3 into 56×84 → 56×75, 4 px left border
    img = backbone.preprocess([frame])[0]
    expected = (torch.tensor(colour / 255.0) - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    nw = round(640 * 56 / 480)
    left = (W - nw) // 2
    content = img[:, :, left:left + nw]
    torch.testing.assert_close(content, expected.float()[:, None, None].expand_as(content), atol=1e-5, rtol=0)
    assert (img[:, :, :left] == 0).all() and (img[:, :, left + nw:] == 0).all()  # mean colour → 0


def test_preprocess_keeps_left_right_and_top_bottom(backbone: DinoBackbone) -> None:
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[:360, :320] = 255  # white box top-left
    img = backbone.preprocess([frame])[0].mean(0)  # (56, 84)
    nh = round(720 * W / 1280)  # 16:9 into 56×84 → 84 wide, 47 high, 4 rows of border above
    top = (H - nh) // 2
    assert top == 4 and (img[:top] == 0).all() and (img[top + nh:] == 0).all()
    content = img[top:top + nh]
    assert content[:10, :10].mean() > 1.5 and content[-10:, -20:].mean() < -1.5
    assert content[:10, -20:].mean() < -1.5 and content[-10:, :10].mean() < -1.5


@pytest.mark.parametrize(
    ("frames", "words"),
    [
        (np.zeros((1, 30, 40, 3), np.float32), "dtype float32"),
        (np.zeros((1, 30, 40, 4), np.uint8), "RGB (H, W, 3)"),
        (np.zeros((30, 40, 3), np.uint8), "(T, H, W, 3)"),
        ([], "no frames"),
        ([np.zeros((0, 40, 3), np.uint8)], "frame 0 has shape"),
        ("screen.png", "not an RGB image"),
    ],
)
def test_bad_frames_raise_clear_errors(tok: FrameTokenizer, frames, words: str) -> None:
    with pytest.raises(VisionError, match=words.replace("(", r"\(").replace(")", r"\)")):
        tok(frames)


# --- tokens ---------------------------------------------------------------------------------------
def test_streaming_equals_batched_and_reset(tok: FrameTokenizer) -> None:
    frames = clip(6)
    with torch.no_grad():
        batched = tok(frames)
        assert batched.shape == (6, CFG.d_token)
        with tok.streaming():
            streamed = torch.stack([tok.step(f) for f in frames])
            tok.reset_streaming()
            again = torch.stack([tok.step(f) for f in frames[:2]])
        with torch.inference_mode(), tok.streaming():  # as the generator runs it
            inference = torch.stack([tok.step(f) for f in frames])
    torch.testing.assert_close(streamed, batched)
    torch.testing.assert_close(again, batched[:2])
    torch.testing.assert_close(inference, batched)
    assert (batched[1:] - batched[:1]).abs().max() > 1e-3  # the frames really differ
    with pytest.raises(RuntimeError, match="streaming"):
        tok.step(frames[0])


def test_tokens_are_causal_and_clips_can_be_continued(tok: FrameTokenizer) -> None:
    frames = clip(6)
    with torch.no_grad():
        grids = tok.grids(frames, batch_size=4)
        full = tok.tokens_from_grids(grids)
        torch.testing.assert_close(tok(frames[:3]), full[:3])  # later frames never change earlier tokens
        torch.testing.assert_close(tok.tokens_from_grids(grids[3:], grids[2]), full[3:])
        fp16_cache = tok.tokens_from_grids(grids.half())
        torch.testing.assert_close(fp16_cache, full, atol=2e-2, rtol=2e-2)
        batch = tok.tokens_from_grids(torch.stack([grids, grids.flip(0)]))  # (B, T, d)
    torch.testing.assert_close(batch[0], full)
    assert batch.shape == (2, 6, CFG.d_token)


def test_first_frame_delta_is_zero(tok: FrameTokenizer) -> None:
    grids = tok.grids(clip(3))[None]  # (1, 3, gh, gw, C)
    x = tok.grid_and_delta(grids)
    assert x.shape == (1, 3, *CFG.grid_size, 768)
    torch.testing.assert_close(x[..., :384], grids)
    assert (x[:, 0, ..., 384:] == 0).all()
    torch.testing.assert_close(x[:, 2, ..., 384:], grids[:, 2] - grids[:, 1])
    prev = torch.randn(1, *CFG.grid_size, 384)
    torch.testing.assert_close(tok.grid_and_delta(grids, prev)[:, 0, ..., 384:], grids[:, 0] - prev)


def test_pooling_before_projection_is_exact(backbone: DinoBackbone, tok: FrameTokenizer) -> None:
    unpooled = DinoBackbone(config=CFG.replace(pool=1))
    images = backbone.preprocess(clip(2))
    fine = unpooled(images)  # (2, 4, 6, 384)
    assert fine.shape == (2, 4, 6, 384)

    def pool(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)

    torch.testing.assert_close(pool(fine), backbone(images))
    x = tok.grid_and_delta(fine[None])[0]  # (2, 4, 6, 768)
    with torch.no_grad():
        torch.testing.assert_close(tok.proj(tok.grid_and_delta(pool(fine)[None])[0]), pool(tok.proj(x)))


def test_state_dict_excludes_backbone(tok: FrameTokenizer, backbone: DinoBackbone) -> None:
    keys = set(tok.state_dict())
    assert keys and not any(k.startswith(("vit", "backbone", "_backbone")) for k in keys)
    assert all(p.requires_grad for p in tok.parameters())
    n = sum(p.numel() for p in tok.parameters())
    assert n < 2_000_000 < sum(p.numel() for p in backbone.parameters())
    twin = FrameTokenizer(CFG, backbone=backbone)
    twin.load_state_dict(tok.state_dict(), strict=True)
    frames = clip(2)
    with torch.no_grad():
        torch.testing.assert_close(twin(frames), tok(frames))
    tok.to(torch.float64)  # .to() reaches the backbone although it is outside the module tree
    assert backbone.vit.pos_embed.dtype == torch.float64
    tok.to(torch.float32)
    assert backbone.vit.pos_embed.dtype == torch.float32
    with pytest.raises(ValueError, match="another vision config"):
        FrameTokenizer(CFG.replace(input_size=(84, 140)), backbone=backbone)


def test_gradients_reach_the_aggregator_only(tok: FrameTokenizer, backbone: DinoBackbone) -> None:
    tok(clip(3)).square().sum().backward()
    for name, p in tok.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in backbone.parameters())


def test_bf16_tokens_close_to_fp32(tok: FrameTokenizer) -> None:
    tok16 = FrameTokenizer(CFG.replace(dtype="bf16"))
    tok16.load_state_dict(tok.state_dict())
    frames = clip(4)
    with torch.no_grad():
        a, b = tok(frames), tok16(frames)
    # measured: relative L2 ≈ 2e-3, min cosine > 0.99999 (scripts/measure_vision.py)
    assert float((a - b).norm() / a.norm()) < 1e-2
    assert float(F.cosine_similarity(a, b, dim=-1).min()) > 0.999
    assert not torch.equal(a, b)  # bf16 really ran


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="no native bf16 on this CPU: "
                    "the linear layers are not packed there (the build machines have AMX)")
def test_bf16_linear_layers_are_packed_and_give_the_same_grids() -> None:
    """On a CPU with native bf16 the backbone's linear layers keep their weight in oneDNN's packed
    layout too: the same grids bit for bit as the plain bf16 product, the same state dict keys,
    and a deep copy (what ``optimize_vision`` makes) falls back to the plain product."""
    import copy

    from model.vision import _PackedLinear

    packed = DinoBackbone(config=CFG.replace(dtype="bf16"))
    linears = [m for m in packed.vit.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is _PackedLinear and m._packed is not None for m in linears)
    images = packed.preprocess(clip(3))
    with torch.inference_mode():
        fast = packed(images)
        for m in linears:
            m._packed = None
        plain = packed(images)
    assert torch.equal(fast, plain)
    assert set(packed.vit.state_dict()) == set(DinoBackbone(config=CFG).vit.state_dict())
    for m in linears:
        m.pack()
    twin = copy.deepcopy(packed.vit)
    assert all(getattr(m, "_packed", None) is None for m in twin.modules() if isinstance(m, _PackedLinear))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(twin.forward_features(images)[:, packed.num_prefix_tokens:],
                                   packed.vit.forward_features(images)[:, packed.num_prefix_tokens:], rtol=0, atol=0)


# --- weights --------------------------------------------------------------------------------------
def test_seeded_weights_deterministic_and_fingerprinted(backbone: DinoBackbone) -> None:
    rng_before = torch.get_rng_state()
    tiny = DinoBackbone(config=VISION_PRESETS["tiny"])  # checks the preset's recorded fingerprint
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is untouched
    # same seed → same tensors, whatever the input size (the position grid is resampled at load)
    assert tiny.fingerprint == backbone.fingerprint == VISION_PRESETS["tiny"].fingerprint
    tiny_state = tiny.vit.state_dict()
    for name, p in backbone.vit.state_dict().items():
        if name != "pos_embed":  # tiny is bf16: its linear / conv weights are stored in bf16
            assert torch.equal(p.to(tiny_state[name].dtype), tiny_state[name]), name
    assert tiny_state["blocks.0.attn.qkv.weight"].dtype == torch.bfloat16
    assert tiny_state["blocks.0.norm1.weight"].dtype == torch.float32
    other = tensors_fingerprint(seeded_state_dict(backbone.vit, 1))
    assert other != backbone.fingerprint
    with pytest.raises(VisionError, match="trained with different DINOv2 weights"):
        DinoBackbone(config=CFG.replace(fingerprint=other))


def test_weights_from_local_files(backbone: DinoBackbone, weights_file: Path, tmp_path: Path) -> None:
    images = backbone.preprocess(clip(2))
    cfg = CFG.replace(weights=str(weights_file), weights_sha256=file_sha256(weights_file),
                      fingerprint=backbone.fingerprint)
    from_file = DinoBackbone(config=cfg)
    torch.testing.assert_close(from_file(images), backbone(images), rtol=0, atol=0)
    pth = tmp_path / "dinov2.pth"
    torch.save(seeded_state_dict(backbone.vit, 0), pth)
    torch.testing.assert_close(DinoBackbone(config=CFG.replace(weights=str(pth)))(images), backbone(images))

    with pytest.raises(VisionError, match="sha256"):
        DinoBackbone(config=cfg.replace(weights_sha256="0" * 64))
    truncated = tmp_path / "model.safetensors"
    truncated.write_bytes(weights_file.read_bytes()[:4096])
    with pytest.raises(VisionError, match="could not be read"):
        DinoBackbone(config=CFG.replace(weights=str(truncated)))
    wrong = tmp_path / "wrong.safetensors"
    save_file({"pos_embed": torch.zeros(1, 4, 384), "foo": torch.zeros(3)}, str(wrong))
    with pytest.raises(VisionError, match="do not fit"):
        DinoBackbone(config=CFG.replace(weights=str(wrong)))
    with pytest.raises(VisionError, match="does not exist"):
        DinoBackbone(config=CFG.replace(weights=str(tmp_path / "missing.safetensors")))


def test_hub_weights_offline(monkeypatch, tmp_path: Path, weights_file: Path, backbone: DinoBackbone) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    base = VISION_PRESETS["base"]
    with pytest.raises(VisionError) as err:
        DinoBackbone(config=base)
    msg = str(err.value)
    for words in ("timm/vit_small_patch14_reg4_dinov2.lvd142m", "model.safetensors", "--dinov2-weights",
                  str(tmp_path / "hub"), "HF_HUB_OFFLINE"):
        assert words in msg, words
    # the same weights placed in the HF cache layout are found without any network
    repo = tmp_path / "hub" / "models--timm--vit_small_patch14_reg4_dinov2.lvd142m"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "model.safetensors").symlink_to(weights_file)
    hub = DinoBackbone(config=CFG.replace(weights="hub", fingerprint=backbone.fingerprint))
    images = backbone.preprocess(clip(1))
    torch.testing.assert_close(hub(images), backbone(images), rtol=0, atol=0)


# --- config ---------------------------------------------------------------------------------------
def test_config_roundtrip_and_validation() -> None:
    for name in VISION_PRESETS:
        c = vision_preset(name)
        assert VisionConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert VISION_PRESETS["base"].input_size == (224, 392) and VISION_PRESETS["base"].grid_size == (8, 14)
    assert VISION_PRESETS["tiny"].grid_size == (3, 5) and VISION_PRESETS["tiny"].patch_grid == (6, 10)
    with pytest.raises(VisionError, match="base, tiny"):
        vision_preset("huge")
    with pytest.raises(VisionError, match="unknown vision config keys"):
        VisionConfig.from_dict({**CFG.to_dict(), "colour": 1})
    with pytest.raises(VisionError, match="multiples of patch 14 × pool 2 = 28"):
        VisionConfig(input_size=(98, 168))
    with pytest.raises(VisionError, match="dtype"):
        VisionConfig(dtype="fp16")
    with pytest.raises(VisionError, match="seeded:SEED"):
        VisionConfig(weights="seeded:abc")
    with pytest.raises(VisionError, match="divisible"):
        VisionConfig(d_proj=190)
    with pytest.raises(VisionError, match="cell_readout"):
        VisionConfig(cell_readout=-1)
    old = CFG.to_dict()
    del old["cell_readout"]  # a config.json written before the readout existed
    assert VisionConfig.from_dict(old).cell_readout == 0


def test_a_change_on_the_left_and_on_the_right_give_different_tokens() -> None:
    """The position-specific readout: the same thing appearing in the left or the right corner gives
    tokens that differ by a sizeable fraction of what its appearing does, through the readout alone
    (its weights differ per cell).  The attention pooling alone can unlearn this, and did: trained,
    its token barely moved when the grid was mirrored, and stereo placement stayed at chance."""
    gh, gw = CFG.grid_size
    torch.manual_seed(1)
    still = torch.randn(gh, gw, 384).expand(2, gh, gw, 384).clone()
    thing = 3 * torch.randn(384)
    left, right = still.clone(), still.clone()
    left[1, 0, 0] += thing
    right[1, 0, gw - 1] += thing
    torch.manual_seed(0)
    tok = FrameTokenizer(CFG.replace(cell_readout=8), with_backbone=False)
    assert tok.where.in_features == gh * gw * 8
    with torch.no_grad():
        tok.out.weight.zero_()  # silence the attention path: what is left is the readout's
        t_still, t_left, t_right = (tok.tokens_from_grids(g)[1] for g in (still, left, right))
    assert (t_left - t_right).norm() > 0.3 * (t_left - t_still).norm()
    assert FrameTokenizer(CFG, with_backbone=False).where is None  # off unless configured


def test_resolved_config_records_the_fingerprint(tok: FrameTokenizer) -> None:
    assert CFG.fingerprint is None
    assert tok.resolved_config() == CFG.replace(fingerprint=tok.backbone.fingerprint)


def test_same_grids_is_about_the_backbone_not_the_aggregator() -> None:
    """A feature cache stores grids: a model whose aggregator differs can train on it, one whose
    backbone, input, pool, dtype or weights differ cannot."""
    a = CFG.replace(fingerprint="f" * 64)
    assert a.same_grids(a.replace(d_proj=96, agg_layers=2, d_token=128, cell_readout=8))
    assert a.same_grids(a.replace(weights="hub", fingerprint=None)) is False  # named otherwise, no fingerprint
    assert a.same_grids(a.replace(weights="/elsewhere/dinov2.safetensors"))  # same tensors, moved
    for change in ({"input_size": (84, 140)}, {"pool": 1}, {"dtype": "bf16"}, {"fingerprint": "e" * 64}):
        assert not a.same_grids(a.replace(**change)), change
