"""The optimised CPU path of the per-frame step (``livefoley bench --optimize``).

DINOv2 is most of a frame's cost on a CPU (bench: ~12 of ~20 ms for the shipped model, bf16 on
two cores).  :func:`optimize_vision` replaces its streaming forward — one frame, ``(1, 3, h, w)``
— by a graph that torch.compile's inductor built from the backbone with every linear layer in
int8: weights quantised per output channel once, activations per call (dynamic scales), through
PT2E and the x86 inductor quantizer (torchao), so the matrix products run on AMX / VNNI int8
units.  The backbone's other inputs (a batch of frames, as ``prepare`` and ``generate`` use) keep
the eager path.  The price: building the graph takes seconds, and the grids move by about 1 %
(relative L2; bf16 alone moves them ~0.3 %) — ``bench --optimize`` measures and prints both.

Candidates measured on the 2-core build machine (Xeon with AMX, torch 2.14, DINOv2-S/14 at 84×140):
eager bf16 11.9 ms; whole model in bf16 10.6; compiled bf16 9.3; compiled static int8 6.4 but
19 % grid error (calibrated activations clip); **compiled dynamic int8 7.9 ms, 1 % error** (kept).
Compiling the audio path (transformer, head: graph-capturable, see
``model.generator.StreamSession.latent_from_noise``) made it slower (24 vs 6.3 ms: a compiled
step copies the whole KV cache it writes into), so it stays eager.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import Tensor, nn

from audio.errors import LivefoleyError

__all__ = ["optimize_vision"]


class _Features(nn.Module):
    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, images: Tensor) -> Tensor:
        return self.vit.forward_features(images)


def optimize_vision(backbone, threads: tuple[int, ...] | None = None) -> float:
    """Give ``backbone`` (a :class:`model.vision.DinoBackbone` on the CPU) its int8 compiled
    one-frame forward for each CPU thread count in ``threads`` (default: torch's current one) —
    inductor writes the thread count into the kernels it generates, so a graph built for two
    threads would spin on a core another process holds; the backbone uses the graph built for
    the count in force when it runs, the eager path for any other.  Returns the seconds it took
    (export, quantisation, compilation and a first run of each graph)."""
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
    except ImportError as err:
        raise LivefoleyError(f"the optimised path needs torchao ({err}); install it with "
                             "`pip install 'livefoley[fast]'` or run without --optimize") from None
    if backbone.device.type != "cpu":
        raise LivefoleyError("--optimize is the CPU path (int8 on AMX / VNNI); on a GPU leave it out")
    start = time.perf_counter()
    h, w = backbone.config.input_size
    example = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    features = _Features(copy.deepcopy(backbone.vit).float().eval())
    with torch.no_grad():
        graph = torch.export.export(features, (example,)).module()
        quantizer = xiq.X86InductorQuantizer()
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(is_dynamic=True))
        prepared = prepare_pt2e(graph, quantizer)
        prepared(example)  # the weight observers see the weights (activations are scaled per call)
        quantized = convert_pt2e(prepared)
        before = torch.get_num_threads()
        graphs = dict(backbone.fast_features or {})
        try:
            for n in threads or (before,):
                torch.set_num_threads(n)
                # its own copy (its own code object), so torch.compile does not reuse another count's graph
                with torch._inductor.config.patch(freezing=True):  # weights as constants: packed int8 GEMMs
                    graphs[n] = torch.compile(copy.deepcopy(quantized), dynamic=False)
                    graphs[n](example)  # compiles now, not on the first frame
        finally:
            torch.set_num_threads(before)
    backbone.fast_features = graphs
    return time.perf_counter() - start
