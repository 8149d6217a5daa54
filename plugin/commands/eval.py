"""``livefoley eval``: sync and quality metrics of generated audio against ground truth.

Two modes:

* ``--model MODEL --seeds 100-119`` plays held-out seeds of the synthetic world in-process,
  generates their sound with the model (for every ``--nfe``) and compares it with the world's own
  audio and event log; ``--vae-ceiling`` adds the ground truth passed through the model's VAE.
* ``--generated DIR_OR_FILES --reference DIR`` compares already generated files (mp4 / wav / …,
  named like the clips of ``livefoley synth``) with the synth clips and their events JSON.

Both print one row per variant (plus a "ground truth" row: the reference against itself, which
shows what the onset detector itself can resolve), write every number with ``--json`` and the
picture of the first clip with ``--plot``.  The metrics are in :mod:`audio.metrics`.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

from audio.errors import LivefoleyError, UsageError
from plugin.options import add_dinov2_weights, guidance, json_dest, write_json

log = logging.getLogger(__name__)

HELP = "sync and quality metrics against the synthetic world's ground truth"
DESCRIPTION = """\
Measure how well generated sound matches the ground truth of the synthetic arcade world: event
detection F1 (onsets in the generated audio within ±50 ms of the logged events), median / p90
signed onset offset (positive = sound late), A/V offset by cross-correlating onset envelopes,
stereo pan accuracy, energy in the quiet stretches against the energy around events,
multi-resolution STFT and log-mel distances to the ground-truth audio.

  livefoley eval --model default --seeds 100-119 --seconds 20 --nfe 1 2 4 --vae-ceiling
  livefoley eval --generated out/ --reference clips/      (clips/ written by `livefoley synth`)

With --model the clips are played in-process from the world seeds given (held out: training
clips use 32-bit seeds derived from `livefoley synth --seed`), the model generates each one
with sampling seed = world seed, and --vae-ceiling adds the ground truth passed through the
model's VAE (encode → decode: the best any generator with that VAE can do).  With --generated,
each file is paired with the reference clip of the same name (`synth_s0_0003.wav` or
`synth_s0_0003.mp4`, also `synth_s0_0003.<anything>.wav`).  A "ground truth" row (the reference
against itself) shows the limits of the onset detector."""

from capture.synthetic.looks import LOOKS  # noqa: E402  (numpy and OpenCV: already what eval needs)

MEDIA_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a",
                  ".aif", ".aiff")
MAX_PLOT_TRACKS = 4
MAX_SEEDS = 10_000  # a 20-s clip each is already days of CPU time


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_argument_group("what to evaluate (--model, or --generated with --reference)")
    src.add_argument("--model", metavar="MODEL",
                     help="model to run on held-out world seeds: 'default', a preset (tiny, base: untrained) "
                          "or a model folder; with --generated it only supplies the VAE for --vae-ceiling")
    src.add_argument("--generated", nargs="+", type=Path, metavar="PATH",
                     help="generated files, or folders of them (mp4/wav/flac/…), named like the "
                          "reference clips")
    src.add_argument("--reference", type=Path, metavar="DIR",
                     help="folder of clips written by `livefoley synth` (mp4 + events JSON)")
    gen = p.add_argument_group("generation (--model mode)")
    gen.add_argument("--seeds", default="100-119", metavar="SPEC",
                     help="world seeds: '100-119', '3,7,10-12' (default 100-119)")
    gen.add_argument("--seconds", type=float, default=20.0, metavar="S",
                     help="length of each clip (default 20)")
    gen.add_argument("--size", default="640x360", metavar="WxH",
                     help="frame size of the world (default 640x360)")
    gen.add_argument("--nfe", nargs="+", metavar="NFE",
                     help="head evaluations per frame, one row each: numbers valid for the model, 'heun' "
                          "(diffusion-stage models) or 'all' (default: the model's default)")
    gen.add_argument("--cfg", type=guidance, metavar="W",
                     help="classifier-free guidance ω (default: the model's)")
    gen.add_argument("--look", default="world", choices=sorted(LOOKS),
                     help="draw the world differently (pictures a model may not have trained on): "
                          + "; ".join(f"{k}: {v}" for k, v in LOOKS.items()).replace("%", "%%"))
    gen.add_argument("--vision-every", type=int, default=1, metavar="N",
                     help="encode only every N-th frame and let its token stand for the N frames from it "
                          "(as the live engine's vision/N rungs feed the model): how well the sound follows "
                          "the picture when the engine cannot encode every frame (default 1: every frame)")
    gen.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:N (default auto)")
    add_dinov2_weights(gen)
    p.add_argument("--vae-ceiling", action="store_true",
                   help="also evaluate the ground truth passed through the model's VAE (encode → decode)")
    p.add_argument("--json", nargs="?", const="-", type=json_dest, metavar="FILE",
                   help="write every number as JSON to FILE (or stdout when no FILE is given)")
    p.add_argument("--plot", type=Path, metavar="FILE.png",
                   help="picture of the first clip: frames, spectrograms and event marks on one time axis")
    p.set_defaults(func=run)


# --------------------------------------------------------------------------------------- parsing
def parse_seeds(spec: str) -> list[int]:
    """``'100-119'`` / ``'3,7,10-12'`` → the seeds in order (duplicates dropped)."""
    seeds: list[int] = []
    for part in str(spec).replace(" ", "").split(","):
        if not part:
            continue
        lo_s, dash, hi_s = part.partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if dash else lo
        except ValueError:
            raise UsageError(f"bad --seeds {spec!r}; give seeds like 100-119 or 3,7,10-12") from None
        if lo < 0 or hi < lo:
            raise UsageError(
                f"bad seed range {part!r} in --seeds; use non-negative LOW-HIGH with LOW <= HIGH")
        if len(seeds) + hi - lo + 1 > MAX_SEEDS:
            raise UsageError(f"--seeds {spec!r} names more than {MAX_SEEDS} seeds; evaluate fewer at a time")
        seeds.extend(range(lo, hi + 1))
    seeds = list(dict.fromkeys(seeds))  # duplicates dropped, order kept (linear: a set, not a list scan)
    if not seeds:
        raise UsageError(f"--seeds {spec!r} names no seed; give e.g. 100-119")
    return seeds


def resolve_nfe(requested: list[str] | None, gen) -> list[tuple[str, int]]:
    """``--nfe`` values → ``[(row name, nfe), …]`` for the loaded generator."""
    valid = tuple(gen.valid_nfe)
    diffusion = gen.config.stage == "diffusion"

    def name(n: int) -> str:
        return "heun" if diffusion else f"nfe{n}"

    if not requested:
        return [(name(gen.nfe), gen.nfe)]
    out: list[tuple[str, int]] = []
    for item in requested:
        key = str(item).strip().lower()
        if key == "all":
            values = list(valid)
        elif key == "heun":
            if not diffusion:
                raise UsageError(
                    f"'heun' is the sampler of a diffusion-stage model; {gen.config.name!r} is "
                    f"consistency-tuned: use --nfe {' '.join(map(str, valid))}"
                )
            values = list(valid)
        else:
            try:
                values = [gen.check_nfe(int(key))]
            except ValueError:
                raise UsageError(f"bad --nfe {item!r}; give numbers ({', '.join(map(str, valid))}), "
                                     "'heun' or 'all'") from None
        for n in values:
            if all(n != m for _, m in out):
                out.append((name(n), n))
    return out


# ---------------------------------------------------------------------------------------- output
def _fmt(value, spec: str, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value * scale, spec)


def format_table(rows: list[dict]) -> str:
    head = ("variant", "F1", "prec", "recall", "onset med", "p90", "A/V", "pan", "quiet", "Δ quiet",
            "MR-STFT", "log-mel", "× real time")
    units = ("", "", "", "", "ms", "ms", "ms", "%", "dB", "dB", "", "dB", "")
    lines = []
    for r in rows:
        lines.append((
            r["name"], _fmt(r["f1"], ".3f"), _fmt(r["precision"], ".3f"), _fmt(r["recall"], ".3f"),
            _fmt(r["onset_offset_median_ms"], "+.1f"), _fmt(r["onset_offset_p90_ms"], "+.1f"),
            _fmt(r["av_offset_ms"], "+.1f"), _fmt(r["pan_accuracy"], ".1f", 100.0),
            _fmt(r["quiet_db"], ".1f"),
            _fmt(r["quiet_contrast_db"], ".1f"), _fmt(r["mrstft"], ".2f"), _fmt(r["logmel_l1_db"], ".2f"),
            _fmt(r.get("realtime_factor"), ".2f"),
        ))
    cols = [head, units, *lines]
    widths = [max(len(c[i]) for c in cols) for i in range(len(head))]
    text = ["  ".join(c[i].ljust(widths[i]) if i == 0 else c[i].rjust(widths[i]) for i in range(len(head)))
            for c in cols]
    text.insert(2, "-" * len(text[0]))
    return "\n".join(text)


def _row(name: str, kind: str, clips: list[dict], **extra) -> dict:
    from audio.metrics import aggregate

    return {"name": name, "kind": kind, **extra, **aggregate(clips)}


# -------------------------------------------------------------------------------------- VAE ceiling
# ---------------------------------------------------------------------------------- mode (a): model
def _world_frames(seed: int, n_frames: int, size: tuple[int, int], keep: dict | None = None,
                  look: str = "world"):
    """Frames of world ``seed`` in ``look`` (capture/synthetic/looks.py), drawn lazily (a clip is
    never held in memory whole); frames whose index is a key of ``keep`` are stored there."""
    from capture.synthetic import World
    from capture.synthetic.looks import apply_look

    world = World(seed, width=size[0], height=size[1])
    for i in range(n_frames):
        frame, _, _ = world.step()
        frame = apply_look(frame, look)
        if keep is not None and i in keep:
            keep[i] = frame.copy()
        yield frame


def _run_model(args, metrics) -> dict:
    from tqdm import tqdm

    from audio.codec import roundtrip
    from audio.contract import CONTRACT
    from audio.metrics import evaluate_clip
    from capture.synthetic import world_audio
    from capture.synthetic.looks import mirror_truth
    from capture.synthetic.source import parse_size
    from model.generator import load_generator

    seeds = parse_seeds(args.seeds)
    if not (0 < args.seconds <= 3600):
        raise UsageError(f"--seconds must be a positive number of at most 3600 (an hour per seed), got "
                             f"{args.seconds}")
    if args.vision_every < 1:
        raise UsageError(f"--vision-every must be a whole number of frames ≥ 1, got {args.vision_every}")
    n_frames = int(round(args.seconds * CONTRACT.fps))
    if n_frames < 2:
        raise UsageError(f"--seconds {args.seconds} gives fewer than 2 frames; evaluate at least 0.1 s")
    size = parse_size(args.size, what="--size")
    t0 = time.perf_counter()
    import torch

    from audio.measure import choose_threads

    torch.set_num_threads(choose_threads())  # one per idle core: a busy core gets no thread of ours
    gen = load_generator(args.model, device=args.device, dinov2_weights=args.dinov2_weights)
    load_s = time.perf_counter() - t0
    variants = resolve_nfe(args.nfe, gen)
    guidance = gen.guidance if args.cfg is None else float(args.cfg)
    log.info("evaluating %s on %d seed(s) × %.1f s, variants %s", args.model, len(seeds), args.seconds,
             ", ".join(v for v, _ in variants))

    per_row: dict[str, list[dict]] = {"ground truth": [], **{v: [] for v, _ in variants}}
    if args.vae_ceiling:
        per_row["vae ceiling"] = []
    gen_s = {v: 0.0 for v, _ in variants}
    ceiling_s = 0.0
    plot_data = None
    total = len(seeds) * len(variants) * n_frames
    with tqdm(total=total, unit="frame", desc="eval", file=sys.stderr, mininterval=0.5,
              disable=None) as bar:
        for k, seed in enumerate(seeds):
            reference, events, quiet = world_audio(seed, n_frames, size)
            if args.look == "mirror":
                reference, events = mirror_truth(reference, events)
            clip_id = {"clip": f"synthetic:{seed}", "seed": seed}
            per_row["ground truth"].append(
                {**clip_id, **evaluate_clip(reference, reference, events, quiet_spans=quiet, config=metrics)})
            keep = None
            if args.plot is not None and k == 0:
                from audio.plots import pick_thumbnails, thumbnail_count

                keep = dict.fromkeys(pick_thumbnails(n_frames, thumbnail_count(*size)))
                plot_data = {"reference": reference, "events": events, "generated": {}, "keep": keep,
                             "title": f"{args.model} on synthetic:{seed}"}
            for j, (name, nfe) in enumerate(variants):
                frames = _world_frames(seed, n_frames, size, keep if j == 0 else None, args.look)
                t = time.perf_counter()
                audio = gen.generate_from_tokens(gen.tokenize(frames, every=args.vision_every), seed=seed, nfe=nfe,
                                                 guidance=guidance, progress=bar.update)
                gen_s[name] += time.perf_counter() - t
                audio = audio[:, : reference.shape[1]]
                per_row[name].append(
                    {**clip_id, **evaluate_clip(audio, reference, events, quiet_spans=quiet, config=metrics)})
                if plot_data is not None and k == 0 and len(plot_data["generated"]) < MAX_PLOT_TRACKS:
                    plot_data["generated"][name] = audio
            if args.vae_ceiling:
                t = time.perf_counter()
                through = roundtrip(gen.vae, reference)
                ceiling_s += time.perf_counter() - t
                per_row["vae ceiling"].append(
                    {**clip_id, **evaluate_clip(through, reference, events, quiet_spans=quiet, config=metrics)})
                if plot_data is not None and k == 0:
                    plot_data["ceiling"] = through

    audio_s = len(seeds) * n_frames / CONTRACT.fps
    rows = [_row("ground truth", "reference", per_row["ground truth"])]
    for name, nfe in variants:
        rows.append(_row(name, "generated", per_row[name], nfe=nfe, cfg=guidance,
                         generate_s=round(gen_s[name], 3),
                         realtime_factor=audio_s / gen_s[name] if gen_s[name] > 0 else None))
    if args.vae_ceiling:
        rows.append(_row("vae ceiling", "ceiling", per_row["vae ceiling"], roundtrip_s=round(ceiling_s, 3)))
    if plot_data is not None:
        from audio.plots import plot_clip

        tracks = dict(plot_data["generated"])
        if "ceiling" in plot_data and len(tracks) < MAX_PLOT_TRACKS:
            tracks["vae ceiling"] = plot_data["ceiling"]
        thumbs = [(i / CONTRACT.fps, img) for i, img in sorted(plot_data["keep"].items()) if img is not None]
        plot_clip(args.plot, generated=tracks, reference=plot_data["reference"], events=plot_data["events"],
                  thumbnails=thumbs, title=plot_data["title"], config=metrics)
    return {
        "mode": "model",
        "model": str(args.model),
        "model_name": gen.config.name,
        "stage": gen.config.stage,
        "device": str(gen.device),
        "cfg": guidance,
        "seeds": seeds,
        "seconds": n_frames / CONTRACT.fps,
        "size": list(size),
        "look": args.look,
        "vision_every": args.vision_every,
        "load_s": round(load_s, 3),
        "rows": rows,
    }


# ---------------------------------------------------------------------------------- mode (b): files
def _media_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in MEDIA_SUFFIXES
                           and not f.name.startswith("."))
            if not found:
                raise LivefoleyError(f"{p} holds no audio or video files ({', '.join(MEDIA_SUFFIXES)})")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise LivefoleyError(f"--generated {p}: no such file or folder")
    return files


def pair_files(generated: list[Path], reference_dir: Path) -> list[tuple[Path, Path]]:
    """``[(generated file, reference video), …]``: the reference clip whose name is the generated
    file's stem, or the longest one that the stem starts with followed by '.', '_' or '-'."""
    if not reference_dir.is_dir():
        raise LivefoleyError(
            f"--reference {reference_dir} is not a folder; give the folder `livefoley synth` wrote")
    refs = {}
    for f in reference_dir.iterdir():
        if f.name.endswith(".events.json") and not f.name.startswith("."):
            stem = f.name[: -len(".events.json")]
            videos = [v for v in (f.with_name(stem + s) for s in MEDIA_SUFFIXES) if v.is_file()]
            if videos:
                refs[stem] = videos[0]
    if not refs:
        raise LivefoleyError(f"{reference_dir} holds no synth clips (NAME.mp4 + NAME.events.json); "
                             "write them with `livefoley synth --out DIR`")
    pairs, missing = [], []
    for g in generated:
        stem = g.stem
        if stem in refs:
            match = stem
        else:
            cands = [s for s in refs if stem.startswith(s) and stem[len(s)] in "._-"]
            match = max(cands, key=len) if cands else None
        if match is None:
            missing.append(g.name)
        elif refs[match].resolve() == g.resolve():
            raise UsageError(
                f"{g} is the reference clip itself; point --generated at the generated files")
        else:
            pairs.append((g, refs[match]))
    if missing:
        raise LivefoleyError(
            f"no reference clip in {reference_dir} for {', '.join(missing[:5])}"
            f"{' …' if len(missing) > 5 else ''}; name generated files like the clips (e.g. "
            f"{next(iter(sorted(refs)))}.wav)"
        )
    return pairs


def _fit(audio, n: int, what: str):
    """Cut or zero-pad ``(2, M)`` to ``(2, n)``; a difference beyond one frame is logged."""
    import numpy as np

    from audio.contract import CONTRACT

    m = audio.shape[1]
    if abs(m - n) > CONTRACT.hop:
        log.warning("%s has %d samples, the reference %d: %s", what, m, n,
                    "cut to the reference" if m > n else "padded with silence")
    if m >= n:
        return audio[:, :n]
    return np.pad(audio, ((0, 0), (0, n - m)))


def _video_thumbnails(path: Path, n_frames: int, size: tuple[int, int]):
    from audio.plots import pick_thumbnails, thumbnail_count
    from capture.base import CaptureError
    from capture.file import iter_frames_30fps

    wanted = set(pick_thumbnails(n_frames, thumbnail_count(*size)))
    thumbs = []
    try:
        for frame in iter_frames_30fps(path, size=(256, 144)):
            if frame.index in wanted:
                thumbs.append((frame.pts, frame.image))
            if frame.index >= max(wanted):
                break
    except CaptureError as err:
        log.warning("no frames for the plot from %s (%s)", path, err)
    return thumbs


def _run_files(args, metrics) -> dict:
    from audio.codec import roundtrip
    from audio.contract import CONTRACT
    from audio.io import read_audio
    from audio.metrics import evaluate_clip
    from capture.synthetic.clips import load_events

    if args.reference is None:
        raise UsageError("--generated needs --reference DIR (the folder of the synth clips)")
    pairs = pair_files(_media_files(args.generated), args.reference)
    gen = None
    if args.vae_ceiling:
        if not args.model:
            raise UsageError("--vae-ceiling with --generated needs --model MODEL (whose VAE to use)")
        from model.generator import load_generator

        gen = load_generator(args.model, device=args.device, dinov2_weights=args.dinov2_weights)
    rows_clips: dict[str, list[dict]] = {"ground truth": [], "generated": []}
    if gen is not None:
        rows_clips["vae ceiling"] = []
    plot_data = None
    for k, (gpath, rpath) in enumerate(pairs):
        record = load_events(rpath)
        n = int(record["n_frames"]) * CONTRACT.hop
        reference = _fit(read_audio(rpath), n, str(rpath))
        generated = _fit(read_audio(gpath), n, str(gpath))
        events, quiet = record["events"], record.get("quiet_spans")
        clip_id = {"clip": rpath.stem, "generated_file": str(gpath), "reference_file": str(rpath)}
        rows_clips["ground truth"].append(
            {**clip_id, **evaluate_clip(reference, reference, events, quiet_spans=quiet, config=metrics)})
        rows_clips["generated"].append(
            {**clip_id, **evaluate_clip(generated, reference, events, quiet_spans=quiet, config=metrics)})
        through = None
        if gen is not None:
            through = roundtrip(gen.vae, reference)
            rows_clips["vae ceiling"].append(
                {**clip_id, **evaluate_clip(through, reference, events, quiet_spans=quiet, config=metrics)})
        if args.plot is not None and k == 0:
            tracks = {"generated": generated}
            if through is not None:
                tracks["vae ceiling"] = through
            plot_data = dict(generated=tracks, reference=reference, events=events,
                             thumbnails=_video_thumbnails(rpath, int(record["n_frames"]),
                                                         (int(record["width"]), int(record["height"]))),
                             title=f"{gpath.name} vs {rpath.name}")
    if plot_data is not None:
        from audio.plots import plot_clip

        plot_clip(args.plot, config=metrics, **plot_data)
    kinds = {"ground truth": "reference", "generated": "generated", "vae ceiling": "ceiling"}
    rows = [_row(name, kinds[name], clips) for name, clips in rows_clips.items()]
    return {"mode": "files", "reference": str(args.reference), "generated": [str(g) for g, _ in pairs],
            "model": str(args.model) if args.model else None, "rows": rows}


def run(args: argparse.Namespace) -> int:
    from audio.metrics import MetricsConfig

    if args.generated is None and not args.model:
        raise UsageError(
            "give --model MODEL (evaluate it on world seeds) or --generated FILES --reference DIR")
    if args.generated is None and args.reference is not None:
        raise UsageError(
            "--reference goes with --generated; with --model the world itself is the reference")
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise UsageError(f"--plot {args.plot} must end in .png")
    metrics = MetricsConfig()
    start = time.perf_counter()
    result = _run_files(args, metrics) if args.generated is not None else _run_model(args, metrics)
    payload = {"format": "livefoley-eval/1", **result, "metrics_config": metrics.to_dict(),
               "wall_s": round(time.perf_counter() - start, 3)}
    if args.plot is not None:
        payload["plot"] = str(args.plot)
    if args.json and write_json(payload, args.json):
        return 0
    print(format_table(payload["rows"]))
    n_clips = payload["rows"][0]["n_clips"]
    seconds = payload["rows"][0]["seconds"]
    print(f"{n_clips} clip(s), {seconds:.1f} s of audio, {payload['wall_s']:.1f} s wall"
          + (f"; JSON: {args.json}" if args.json else "") + (f"; plot: {args.plot}" if args.plot else ""))
    return 0
