"""The optimised CPU path of the per-frame step (``--optimize`` of ``bench``, ``live``, ``obs``):
DINOv2 compiled (:func:`optimize_vision`) and the audio path's linear layers in int8
(:func:`optimize_audio`), each only where it measured faster on this CPU.

DINOv2 is most of a frame's cost on a CPU.  :func:`optimize_vision` gives the backbone's streaming
forward — one frame, ``(1, 3, h, w)`` — a graph that AOTInductor compiled ahead of time for one
thread count (a shared library: C++ kernels, the weights frozen in, no Python between the ops, run
through its C interface so that Python's lock is let go meanwhile).  Which graph wins depends on
the CPU, so each is *measured* there and the fastest kept (the eager forward included: a count
where no graph beats it keeps the eager path):

* ``int8``: every linear layer in int8 — weights per output channel once, activations per call
  (dynamic scales), through PT2E and the x86 inductor quantizer (torchao, ``livefoley[fast]``).
  Grids move by ~1 % (relative L2).  Wins where the CPU has AMX int8 (Xeon 4th gen on): 7.9 against
  11.9 ms eager on the 2-core Sapphire Rapids build machine (torch.compile'd then).  On an AMD EPYC
  (AVX-512 VNNI, no AMX) it loses to the eager path.
* ``bf16``: the eager computation (bf16 autocast: products in bf16, norms in fp32) compiled, its
  elementwise work fused: the same numbers to ~1e-3 (a backbone configured in fp32 gets its fp32
  computation compiled under this name).  On that EPYC 13.3 against 22.5 ms eager on two threads
  (torch.compile's graph of the same: 16.1).

What was measured is remembered (``optimize.json`` in ``$LIVEFOLEY_CACHE_DIR``, else
``$XDG_CACHE_HOME/livefoley`` or ``~/.cache/livefoley``), per CPU, torch version, backbone, input size,
candidate set and thread count, and the winners' libraries are kept beside it (``vision/``, 45–90 MB
each, per weights too; trimmed to 1 GiB, the least recently used first): a later start loads them
(~0.1 s) instead of measuring and compiling.  The audio path's choice is remembered there too (per
CPU, torch version, the layers' shapes and thread count).  Delete the folder to measure again.

Candidates measured and not kept (Sapphire Rapids): the whole ViT in bf16 (10.6 ms against 11.9;
norms in bf16), compiled static int8 (6.4 ms but 19 % grid error: calibrated activations clip).
Compiling the audio path (transformer, head: graph-capturable, see
``model.generator.StreamSession.latent_from_noise``) made it slower (torch.compile 24 against 6.3 ms,
AOTInductor 7.2 against 3.9 ms a transformer step: a compiled step copies the whole KV cache it
writes into), so it stays eager.  What it waits for is memory: each token's products read every
weight of the transformer (13 MB in fp32 for ``default``, twice a frame), the head (6 MB) and the
VAE decoder (8 MB) for one or two rows of work, so :func:`optimize_audio` gives those layers int8
weights (a quarter of the bytes) — ``default`` on an AMD EPYC, 2 threads: 16.1 → 11.2 ms a frame.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from audio.errors import LivefoleyError
from model.vision import vit_features

__all__ = ["PATHS", "Int8Linear", "optimize_audio", "optimize_vision"]

log = logging.getLogger(__name__)

PATHS = ("int8", "bf16")  # the compiled candidates, besides the eager forward
GRAPH_VERSION = 2  # in every kept package's key: raise it when what is compiled changes
KEPT_LIBRARIES_BYTES = 2**30  # vision/ is trimmed to this, the least recently used libraries first
TIMING_ROUNDS = 15  # interleaved runs of every candidate; the median decides


class _Features(nn.Module):
    """The backbone's forward as eager runs it: fp32 weights, bf16 autocast when ``bf16``."""

    def __init__(self, vit: nn.Module, *, bf16: bool = False) -> None:
        super().__init__()
        self.vit = vit
        self.bf16 = bf16

    def forward(self, images: Tensor) -> Tensor:
        return vit_features(self.vit, images, bf16=self.bf16).float()


def _int8_module(vit: nn.Module, example: Tensor) -> nn.Module:
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
    except ImportError as err:
        raise ImportError(f"the int8 path needs torchao ({err}): `pip install 'livefoley[fast]'`") from None
    graph = torch.export.export(_Features(vit), (example,)).module()
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(is_dynamic=True))
    prepared = prepare_pt2e(graph, quantizer)
    prepared(example)  # the weight observers see the weights (activations are scaled per call)
    return convert_pt2e(prepared)


def _package(module: nn.Module, example: Tensor, path: Path) -> None:
    """AOTInductor: ``module`` exported for one ``example``-shaped frame and compiled ahead of time for
    torch's current thread count, its weights frozen in as constants; the compiled library (weights
    inside) is written to ``path``, whole or not at all."""
    import tempfile
    import zipfile

    from audio.files import atomic_path

    exported = torch.export.export(module, (example,))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        package = Path(tmp) / "graph.pt2"
        with torch._inductor.config.patch(freezing=True):
            torch._inductor.aoti_compile_and_package(exported, package_path=str(package))
        with zipfile.ZipFile(package) as z:
            libraries = [n for n in z.namelist() if n.endswith(".wrapper.so") and "/aotinductor/" in n]
            if len(libraries) != 1:
                raise LivefoleyError(f"torch {torch.__version__} wrote an AOTInductor package laid out unlike the "
                                     f"ones livefoley knows ({len(libraries)} compiled libraries); run without "
                                     "--optimize")
            library = z.read(libraries[0])
    with atomic_path(path) as dst:
        dst.write_bytes(library)
    with atomic_path(_digest_path(path)) as dst:  # checked before each load: see _intact
        dst.write_text(hashlib.sha256(library).hexdigest())


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _intact(path: Path) -> bool:
    """Whether the kept library is the one written: a damaged one must never be loaded (the loader
    maps the file and reads past a truncated end: the process dies of SIGBUS, no exception)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() == _digest_path(path).read_text().strip()
    except OSError:
        return False


def _prune(folder: Path, keep: set[Path], limit: int | None = None) -> list[Path]:
    """Remove the least recently used kept libraries (by modification time: written or loaded), each
    with its digest, until ``folder`` holds at most ``limit`` bytes (default
    :data:`KEPT_LIBRARIES_BYTES`) of them; those in ``keep`` (this process's) stay whatever their
    size.  Libraries of another torch, CPU or weights are never loaded again, so without this the
    folder would only grow.  Returns what was removed."""
    limit = KEPT_LIBRARIES_BYTES if limit is None else limit
    kept = []
    for path in folder.glob("*.so"):
        if path.name.startswith("."):  # a library being written (audio.files.atomic_path)
            continue
        try:
            st = path.stat()
        except OSError:  # removed meanwhile
            continue
        kept.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in kept)
    removed = []
    for _, size, path in sorted(kept):
        if total <= limit:
            break
        if path in keep:
            continue
        try:
            path.unlink(missing_ok=True)  # a process that has it loaded keeps its mapping
            _digest_path(path).unlink(missing_ok=True)
        except OSError as err:
            log.warning("optimised vision: could not remove the old library %s (%s)", path, err)
            continue
        total -= size
        removed.append(path)
    if removed:
        log.info("optimised vision: removed %d compiled librar%s not used lately, to keep %s under %.1f GB",
                 len(removed), "y" if len(removed) == 1 else "ies", folder, limit / 1e9)
    return removed


class _Compiled:
    """A compiled library of :func:`_package`, run through AOTInductor's C interface with ctypes, which
    lets go of Python's lock while it runs: torch's own package loader holds it for the whole run
    (measured: another Python thread stalled ~20 ms a frame), and the live engine's audio callback,
    capture and worker threads are Python."""

    def __init__(self, path: Path) -> None:
        import ctypes

        self.path = path
        self._lib = lib = ctypes.CDLL(str(path))
        for fn in (lib.AOTInductorModelContainerCreateWithDevice, lib.AOTInductorModelContainerRun,
                   lib.AOTInductorModelContainerGetNumOutputs, lib.AOTInductorModelContainerDelete):
            fn.restype = ctypes.c_int32
        self._handle = ctypes.c_void_p()
        self._check(lib.AOTInductorModelContainerCreateWithDevice(ctypes.byref(self._handle), ctypes.c_size_t(1),
                                                                  b"cpu", None), "load")
        n = ctypes.c_size_t()
        self._check(lib.AOTInductorModelContainerGetNumOutputs(self._handle, ctypes.byref(n)), "inspect")
        self._outputs = n.value
        # prototypes of their own: the shared ctypes.pythonapi functions keep their types for other code
        self._pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
            ("PyCapsule_GetPointer", ctypes.pythonapi))
        self._capsule = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)(
            ("PyCapsule_New", ctypes.pythonapi))
        self._ctypes = ctypes

    def _check(self, status: int, what: str) -> None:
        if status != 0:
            raise LivefoleyError(f"the compiled vision graph {self.path} failed to {what} (AOTInductor status "
                                 f"{status}); delete it or run without --optimize")

    def __call__(self, images: Tensor) -> Tensor:
        ctypes, aoti = self._ctypes, torch._C._aoti
        inputs = [self._pointer(c, None) for c in aoti.unsafe_alloc_void_ptrs_from_tensors([images.contiguous()])]
        outputs = (ctypes.c_void_p * self._outputs)()
        self._check(self._lib.AOTInductorModelContainerRun(  # the handles in are taken over by the run
            self._handle, (ctypes.c_void_p * len(inputs))(*inputs), ctypes.c_size_t(len(inputs)), outputs,
            ctypes.c_size_t(self._outputs), None, None), "run")
        (tokens,) = aoti.alloc_tensors_by_stealing_from_void_ptrs([self._capsule(p, None, None) for p in outputs])
        return tokens

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            self._lib.AOTInductorModelContainerDelete(handle)


def _median_ms(candidates: dict[str, Callable[[Tensor], Tensor]], example: Tensor) -> dict[str, float]:
    """Per candidate, the median time of one forward over interleaved rounds (a noisy machine
    tilts them all alike)."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for fn in candidates.values():
        fn(example)  # warm
    for _ in range(TIMING_ROUNDS):
        for name, fn in candidates.items():
            t = time.perf_counter()
            fn(example)
            times[name].append((time.perf_counter() - t) * 1000.0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def choice_cache() -> Path:
    """The file that remembers which path won where (see the module docstring)."""
    root = os.environ.get("LIVEFOLEY_CACHE_DIR")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "livefoley"
    return Path(root) / "optimize.json"


def _cpu() -> str:
    """The CPU's model name and a digest of its feature flags (what decides which kernels win)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
                if "model name" in info and "flags" in info:
                    break
    except OSError:
        pass
    name = info.get("model name") or platform.processor() or platform.machine()
    flags = " ".join(sorted(info.get("flags", "").split()))
    return f"{name} [{hashlib.sha256(flags.encode()).hexdigest()[:12]}]"


def _read_choices(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        log.warning("optimised paths: ignoring %s (%s); measuring again", path, err)
        return {}


def _write_choices(path: Path, choices: dict) -> None:
    from audio.files import atomic_path

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(choices, indent=1, sort_keys=True))
    except OSError as err:  # a read-only home must not stop the stream
        log.warning("optimised paths: could not remember the choice in %s (%s)", path, err)


def _weights_digest(vit: nn.Module) -> str:
    """A digest of the backbone's weights: a package holds them, so it serves only the same ones."""
    h = hashlib.sha256()
    for name, t in vit.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().contiguous().view(torch.uint8).numpy())
    return h.hexdigest()[:16]


def optimize_vision(backbone, threads: tuple[int, ...] | None = None, *,
                    paths: tuple[str, ...] = PATHS, keep: str | None = None) -> float:
    """Give ``backbone`` (a :class:`model.vision.DinoBackbone` on the CPU) the fastest one-frame
    forward for each CPU thread count in ``threads`` (default: torch's current one): every candidate
    in ``paths`` is compiled ahead of time with torch set to that count (the compiler decides from
    it what to split between threads; the kernels' OpenMP regions run with the calling thread's
    count) and timed against the eager forward at that count; the backbone uses the winner at that
    count and the eager path for any other. ``keep`` (one of ``paths``) installs that candidate
    whatever the timing (tests). What was measured and chosen is in ``backbone.fast_choice``:
    ``{count: {"path", "ms": {name: ms}, "cached"}}`` — ``cached``: the choice came from
    :func:`choice_cache`, measured by an earlier run on this CPU, so nothing was timed. The winners'
    packages are kept beside it (``vision/``, per CPU, torch version, weights, path and count), so a
    later start loads them in well under a second instead of compiling. Returns the seconds it took
    (export, quantisation, compilation, timing)."""
    unknown = set(paths) - set(PATHS) or ({keep} - set(paths) if keep else set())
    if unknown:
        raise ValueError(f"unknown optimised path(s) {sorted(unknown)}; choose from {PATHS}")
    if backbone.device.type != "cpu":
        raise LivefoleyError("--optimize is the CPU path (compiled for the CPU's int8 / bf16 units); on a GPU "
                             "leave it out")
    start = time.perf_counter()
    cfg = backbone.config
    h, w = cfg.input_size
    example = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    bf16 = cfg.dtype == "bf16"
    vit = copy.deepcopy(backbone.vit).float().eval()
    eager = _Features(backbone.vit, bf16=bf16)
    cache = choice_cache()
    remembered = {} if keep else _read_choices(cache)
    key_of = f"{_cpu()} | torch {torch.__version__} | {cfg.backbone} {h}x{w} {cfg.dtype} | {','.join(sorted(paths))} | "
    weights = _weights_digest(vit)
    counts = threads or (torch.get_num_threads(),)
    known = {n: c for n in counts if isinstance(c := remembered.get(key_of + str(n)), dict)
             and c.get("path") in ("eager", *paths) and isinstance(c.get("ms"), dict)}
    modules: dict[str, nn.Module] = {}

    def module(name: str) -> nn.Module | None:
        """The candidate's module to compile; None where it cannot be made here (int8 without torchao)."""
        if name not in modules:
            if name == "bf16":
                modules[name] = _Features(vit, bf16=bf16)
            else:
                try:
                    modules[name] = _int8_module(vit, example)
                except ImportError as err:
                    if keep == "int8" or paths == ("int8",):
                        raise LivefoleyError(f"{err}, or run without --optimize") from None
                    log.info("optimised vision: %s; trying the other paths", err)
                    modules[name] = None
        return modules[name]

    def package(name: str, n: int) -> Path:
        digest = hashlib.sha256(f"{key_of}{n} | {name} | {weights} | {GRAPH_VERSION}".encode()).hexdigest()[:20]
        return cache.parent / "vision" / f"{name}-{n}-{digest}.so"

    def graph(name: str, n: int) -> Callable[[Tensor], Tensor] | None:
        """The candidate's package for ``n`` threads: loaded when kept from an earlier run, else
        compiled (and kept); None where it cannot be built here."""
        path = package(name, n)
        if path.exists():
            try:
                if not _intact(path):
                    raise LivefoleyError("it is not the library that was written (damaged, or its digest is gone)")
                compiled = _Compiled(path)
                with contextlib.suppress(OSError):
                    os.utime(path)  # used now: the last to be pruned (_prune)
                return compiled
            except Exception as err:  # noqa: BLE001 - a damaged package is compiled again
                log.warning("optimised vision: cannot load %s (%s); compiling it again", path, err)
        if module(name) is None:
            return None
        log.info("optimised vision: compiling %s for %d thread(s)…", name, n)
        _package(module(name), example, path)
        return _Compiled(path)

    with torch.no_grad():
        before = torch.get_num_threads()
        graphs = dict(backbone.fast_features or {})
        choices = dict(backbone.fast_choice or {})

        def install(n: int, fast: Callable[[Tensor], Tensor] | None) -> None:
            """The graph for ``n`` threads; None: the eager path."""
            if fast is None:
                graphs.pop(n, None)
            else:
                graphs[n] = fast

        try:
            for n in counts:
                torch.set_num_threads(n)
                if n in known:
                    best, ms = known[n]["path"], known[n]["ms"]
                    fast = None if best == "eager" else graph(best, n)
                    if best == "eager" or fast is not None:
                        install(n, fast)
                        choices[n] = {"path": best, "ms": ms, "cached": True}
                        log.info("optimised vision, %d thread(s): %s, as measured earlier on this CPU (%s; delete "
                                 "it to measure again)", n, best, cache)
                        continue
                    # remembered, but it cannot be built here now (torchao gone): measure again
                built = {name: fast for name in paths if (fast := graph(name, n)) is not None}
                ms = {k: round(v, 2) for k, v in _median_ms({"eager": eager, **built}, example).items()}
                best = keep or min(ms, key=ms.get)
                install(n, built.get(best))
                for name in set(built) - {best}:  # a loser's library is not needed again
                    for path in (package(name, n), _digest_path(package(name, n))):
                        path.unlink(missing_ok=True)
                choices[n] = {"path": best, "ms": ms, "cached": False}
                if not keep and set(ms) == {"eager", *paths}:  # every candidate measured
                    remembered[key_of + str(n)] = {"path": best, "ms": ms}
                log.info("optimised vision, %d thread(s): %s (%s ms a frame)", n, best,
                         ", ".join(f"{k} {v:.1f}" for k, v in ms.items()))
        finally:
            torch.set_num_threads(before)
    if not keep and any(not choices[n]["cached"] for n in counts):
        _write_choices(cache, remembered)
    _prune(cache.parent / "vision", {g.path for g in graphs.values() if isinstance(g, _Compiled)})
    backbone.fast_features = graphs
    backbone.fast_choice = choices
    return time.perf_counter() - start


# --- the audio path ----------------------------------------------------------------------------------


class Int8Linear(nn.Module):
    """An ``nn.Linear`` of the audio path with its weight in int8, one scale per output channel (a
    quarter of fp32's bytes), multiplied in bf16 by ``aten._weight_int8pack_mm``; the bias stays fp32.
    The audio path multiplies one token (or a CFG pair) at a time, so its products read every weight
    for a row or two of work: on a CPU they wait for memory, not arithmetic (fp32 ~150 µs for a
    256 × 768 weight, this ~15 µs).  Products move by ~0.7 % (relative L2)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127.0).clamp_min(torch.finfo(torch.float32).tiny).to(torch.bfloat16)
        self.register_buffer("qweight", torch.round(w / scale.float()[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: Tensor) -> Tensor:
        y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, self.in_features).to(torch.bfloat16), self.qweight,
                                               self.scale)
        y = y.to(x.dtype).view(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


AUDIO_VERSION = "int8-1"  # the int8 layers and the timed step; change it when they change
AUDIO_ROUNDS_STEPS = 4  # audio steps per timed round (each round times both paths, interleaved)


def _audio_linears(gen) -> list[tuple[nn.Module, str, nn.Linear]]:
    """``(parent, name, layer)`` of every linear layer the per-frame audio path runs: transformer,
    diffusion head, the VAE's decoder."""
    roots = [gen.model.transformer, gen.model.head, *gen.vae.decoding_modules()]
    return [(parent, name, child) for root in roots for parent in root.modules()
            for name, child in parent.named_children() if type(child) is nn.Linear]


class _Int8Failed(Exception):
    pass


def _audio_key(gen) -> str:
    """What decides which audio path is faster: the CPU, torch, and the shapes of the layers."""
    shapes = " ".join(f"{layer.in_features}x{layer.out_features}" for _, _, layer in _audio_linears(gen))
    return (f"audio | {_cpu()} | torch {torch.__version__} | {type(gen.vae).__name__} "
            f"{hashlib.sha256(shapes.encode()).hexdigest()[:16]} | {AUDIO_VERSION} | ")


def _time_audio_paths(gen, use: Callable[[str], None], paths: tuple[str, ...],
                      threads: tuple[int, ...], rounds: int = TIMING_ROUNDS) -> dict[int, dict[str, float]]:
    """Per thread count, the median ms of one stream's audio step with each path's layers installed
    by ``use``, over ``rounds`` interleaved rounds (0: each path only run once, nothing timed).
    Raises :class:`_Int8Failed` where the int8 layers cannot run."""
    token = torch.randn(gen.model.vision_in.in_features, generator=torch.Generator().manual_seed(0))
    before = torch.get_num_threads()
    ms: dict[int, dict[str, float]] = {}
    try:
        with gen.stream(seed=0, timing=False) as session:
            def step() -> None:
                session.decode(session.latent(token))
                session.prefeed()

            for n in threads:
                torch.set_num_threads(n)
                times: dict[str, list[float]] = {path: [] for path in paths}
                for path in paths:  # warm
                    use(path)
                    try:
                        step()
                    except RuntimeError as err:
                        if path == "eager":
                            raise
                        raise _Int8Failed(err) from err  # the caller puts the eager layers back
                for _ in range(rounds):
                    for path in paths:
                        use(path)
                        t = time.perf_counter()
                        for _ in range(AUDIO_ROUNDS_STEPS):
                            step()
                        times[path].append((time.perf_counter() - t) * 1000.0 / AUDIO_ROUNDS_STEPS)
                ms[n] = {path: round(statistics.median(ts), 2) for path, ts in times.items() if ts}
    finally:
        torch.set_num_threads(before)
    return ms


def optimize_audio(gen, threads: tuple[int, ...] | None = None, *, keep: str | None = None) -> dict:
    """Give the per-frame audio path (transformer, head, VAE decoder) of ``gen`` (a
    :class:`model.generator.Generator` computing in fp32 on the CPU) int8 linear layers
    (:class:`Int8Linear`) where they are faster here: one stream's audio step (the token's
    transformer step with CFG, the head, the VAE decode, the next latent fed) is timed both ways,
    interleaved, at each CPU thread count in ``threads`` (default: torch's current one), and int8
    is kept only if it wins at every count.  What was measured is remembered in
    :func:`choice_cache` (per CPU, torch version, the layers' shapes and count), so a later start
    only checks that the remembered path runs.  ``keep`` (``"int8"`` or ``"eager"``) installs that
    path whatever the timing (tests).  Returns, and leaves in ``gen.audio_choice``, ``{"path",
    "ms": {count: {"eager": ms, "int8": ms}}, "cached"}``.  The generator cannot be saved afterwards."""
    if keep not in (None, "eager", "int8"):
        raise ValueError(f"unknown audio path {keep!r}; choose from eager, int8")
    if gen.device.type != "cpu":
        raise LivefoleyError("--optimize is the CPU path; on a GPU leave it out")
    if gen.model.vision_in.weight.dtype != torch.float32:
        raise LivefoleyError("the optimised audio path is for an fp32 model: leave out --dtype or --optimize")
    if gen.audio_choice is not None:
        return gen.audio_choice
    layers = _audio_linears(gen)
    eager = [layer for _, _, layer in layers]
    with torch.no_grad():
        paths = {"eager": eager, "int8": [Int8Linear(layer) for layer in eager]}

    def use(path: str) -> None:
        for (parent, name, _), layer in zip(layers, paths[path], strict=True):
            setattr(parent, name, layer)

    counts = threads or (torch.get_num_threads(),)
    cache, key = choice_cache(), _audio_key(gen)
    remembered = {} if keep else _read_choices(cache)
    known = {n: c for n in counts if isinstance(c := remembered.get(key + str(n)), dict)
             and c.get("path") in paths and isinstance(c.get("ms"), dict)
             and all(isinstance(c["ms"].get(p), (int, float)) for p in paths)}  # else: measured again
    ms: dict[int, dict[str, float]] = {}
    cached = keep is None and len(known) == len(counts)
    try:
        if keep is None and not cached:
            known = {n: {"path": "int8" if m["int8"] < m["eager"] else "eager", "ms": m}
                     for n, m in _time_audio_paths(gen, use, tuple(paths), counts).items()}
            remembered.update({key + str(n): c for n, c in known.items()})
            _write_choices(cache, remembered)
        if keep is None:
            ms = {n: known[n]["ms"] for n in counts}
            keep = "int8" if all(known[n]["path"] == "int8" for n in counts) else "eager"
            if cached and keep == "int8":
                _time_audio_paths(gen, use, ("int8",), counts[:1], rounds=0)  # it still runs here
    except _Int8Failed as err:  # a torch without this CPU's int8 kernel: eager it is
        log.warning("optimised audio path: the int8 layers failed here (%s); keeping the eager ones", err)
        keep, ms, cached = "eager", {}, False
    use(keep)
    gen.audio_choice = {"path": keep, "ms": ms, "cached": cached}
    log.info("optimised audio path: %s linear layers (%s)%s", keep,
             "; ".join(f"{n} thread(s): eager {m['eager']:.1f}, int8 {m['int8']:.1f} ms a frame"
                       for n, m in ms.items()) or "chosen, not measured",
             f", as measured earlier on this CPU ({cache}; delete it to measure again)" if cached else "")
    return gen.audio_choice
