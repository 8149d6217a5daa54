"""Shared checkpoint I/O (audio/checkpoint.py): compact int8 storage and its transparent reading."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from audio.checkpoint import QUANT_SCALE, dequantize, quantize, read_safetensors, read_torch_file
from audio.errors import LivefoleyError


def test_int8_round_trip_is_close_and_small(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {"big": torch.randn(512, 256, generator=g), "conv": torch.randn(128, 64, 4, generator=g),
               "bias": torch.randn(512, generator=g), "steps": torch.arange(5)}
    q = quantize(tensors)
    assert q["big"].dtype == torch.int8 and q["big" + QUANT_SCALE].shape == (512, 1)
    assert q["bias"].dtype == torch.float16 and q["steps"].dtype == torch.int64
    save_file(q, str(tmp_path / "q.safetensors"))
    back = read_safetensors(tmp_path / "q.safetensors")
    assert set(back) == set(tensors)
    for name in ("big", "conv"):
        err = (back[name] - tensors[name]).abs().max(dim=-1).values
        row_max = tensors[name].abs().reshape(tensors[name].shape[0], -1).amax(1)
        # half a quantisation step, plus the fp16 rounding of the scale (127 steps × 2^-11)
        assert (err.reshape(err.shape[0], -1).amax(1) <= 0.57 * row_max / 127).all()
        assert back[name].dtype == torch.float32 and back[name].shape == tensors[name].shape
    torch.testing.assert_close(back["bias"].float(), tensors["bias"], atol=2e-3, rtol=1e-3)  # fp16 on disk


def test_a_scale_without_its_tensor_is_an_error(tmp_path):
    save_file({"w" + QUANT_SCALE: torch.ones(3, 1, dtype=torch.float16)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(LivefoleyError, match="not a readable safetensors file"):
        read_safetensors(tmp_path / "bad.safetensors")
    assert dequantize({"a": torch.ones(2)})["a"].shape == (2,)


@pytest.mark.parametrize("content", ["object", "truncated", "empty", "text"])
def test_a_torch_file_is_read_tensors_only_and_a_bad_one_is_named(tmp_path, content):
    """Every .pt/.pth/.ckpt reader (VAE, DINOv2, training state) goes through read_torch_file: objects
    other than tensors are refused without being run, and torch's advice to retry with
    weights_only=False (which would run them) is never passed on."""
    import dataclasses

    from model.dinov2 import VisionError, _read_weights_file

    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2)}, good)
    assert torch.equal(read_torch_file(good)["w"], torch.ones(2))
    bad = tmp_path / "bad.pth"
    if content == "object":
        torch.save({"w": object.__new__(dataclasses.Field)}, bad)
    elif content == "truncated":
        bad.write_bytes(good.read_bytes()[:100])
    else:
        bad.write_bytes(b"" if content == "empty" else b"weights, honest")
    for reader, error in ((lambda p: read_torch_file(p, what="checkpoint"), LivefoleyError),
                          (lambda p: _read_weights_file(p, None), VisionError)):
        with pytest.raises(error) as err:
            reader(bad)
        assert str(bad) in str(err.value) and "weights_only" not in str(err.value)
