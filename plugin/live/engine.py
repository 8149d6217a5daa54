"""The live engine: capture thread → generator worker → sinks, one 1600-sample chunk per 30-fps slot.

The design (the per-slot flow, the device ring's ledger, fill-ins and trims, metrics, controls,
threads) is written up in ``docs/live-engine.md``.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from audio.contract import CONTRACT
from audio.errors import LivefoleyError
from audio.jitter import Action, LevelTarget, RingLedger, shorten
from audio.measure import choose_threads, percentiles, rss_mib
from plugin.live.config import EngineConfig, EngineError
from plugin.live.metrics import Series
from plugin.live.policy import DegradationPolicy, Rung, build_ladder, predict_ms
from plugin.live.vision import Inbox, VisionThread, set_thread_torch_threads

log = logging.getLogger(__name__)


class _StepTimes:
    """EWMAs of the vision, audio-path and prefeed milliseconds (the ladder's predictions, the vision
    budget), kept apart for the two ways a slot runs: *waiting* (vision and the audio path take turns
    on all the threads) and *pipelined* (each on its share of them, side by side).  On two cores the
    same encode took ~13 ms waiting and ~26 ms pipelined: a waiting rung judged by pipelined times
    postponed every encode (its token grew 1.6 s old) and climbed on."""

    PARTS = ("vision", "audio", "prefeed")

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self._ms: dict[tuple[bool, str], float] = {}

    def add(self, waiting: bool, part: str, ms: float) -> None:
        old = self._ms.get((waiting, part))
        self._ms[waiting, part] = ms if old is None else (1 - self.alpha) * old + self.alpha * ms

    def get(self, waiting: bool, part: str) -> float | None:
        """The kind's own EWMA, else the other kind's (nothing measured that way yet), else None."""
        own = self._ms.get((waiting, part))
        return own if own is not None else self._ms.get((not waiting, part))


@dataclass
class _Control:
    kind: str
    args: dict
    future: cf.Future


class LiveEngine:
    """Real-time generation: the design is in ``docs/live-engine.md``.

    ``generator``: an already loaded generator (else ``config.model`` is loaded on start);
    ``source``: an unopened :class:`~capture.base.FrameSource` instead of ``config.source``
    (single use: a restarted engine needs a source string).  Use :meth:`run` for a blocking run,
    or :meth:`start` / :meth:`wait` / :meth:`stop` (or ``with``)."""

    def __init__(self, *, config: EngineConfig, generator: Any = None, source: Any = None) -> None:
        self.config = config
        self._generator = generator
        self._source_obj = source
        self._lock = threading.Lock()
        self._controls: queue.SimpleQueue[_Control] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stop_evt = threading.Event()
        self._ready = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._nfe = config.nfe
        self._guidance = config.guidance
        self._volume = config.volume
        self._sinks = None
        self._capture = None
        self._stream_session = None
        self._device = None
        self._cur_index = 0
        self._source_name = config.source if source is None else getattr(source, "name", "?")
        from audio.sinks import check_volume

        check_volume(config.volume)  # a SinkError that is also a UsageError (exit 2 on the command line)
        self._reset_run()

    # -- per-run state -------------------------------------------------------------------------------
    def _reset_run(self) -> None:
        """Everything one run creates, fresh at construction and at each start: the metric rings and
        counts, the thread split, the vision thread, the stream's settings, token and EWMAs."""
        cap = max(1, int(self.config.history_s * CONTRACT.fps))
        self._g2e = Series(cap)
        self._compute = Series(cap)
        self._audio = Series(cap)
        self._vision = Series(cap)
        self._queue_ms = Series(cap)
        self._age = Series(cap)
        self._hand_times = Series(cap)
        self._chunk_samples = Series(cap)
        self._rss = Series(4096)
        self.counts = dict(slots=0, chunks=0, skipped_slots=0, fill_ins=0, trimmed=0, vision_encoded=0,
                           fresh_slots=0, stale_slots=0, vision_skipped=0, late_slots=0, resets=0,
                           model_swaps=0, cut_samples=0, top_ups=0)
        self._policy: DegradationPolicy | None = None
        self._started_at: float | None = None
        self._first_chunk_at: float | None = None
        self._last_chunk_at: float | None = None
        self._ended_at: float | None = None
        self._underruns_startup: int | None = None
        self._rss_start: float | None = None
        self._end_reason = ""
        self._final_sink_stats: dict | None = None
        self._final_capture_stats: dict | None = None
        self._started_ok = False
        self._thread_split: tuple[int | None, int | None, int | None] = (None, None, None)
        self._vision_thread: VisionThread | None = None
        self._base_nfe: int | None = None  # the stream's NFE / ω before the ladder changes them
        self._base_guidance: float | None = None
        self._token = None  # the newest vision token and the frame it came from
        self._token_frame = None
        self._last_offer = -(10**9)  # index of the last frame offered to / encoded for vision
        self._times = _StepTimes(self.config.policy.alpha)
        self._miss_ewma = 0.0  # EWMA of vision-deadline misses
        self._last_busy_ms, self._last_ahead = 0.0, 0  # the last slot's time and ring level at its write

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self, timeout: float | None = None) -> LiveEngine:
        """Load the model (if needed), open the sinks, warm up, start capturing; returns once the first
        frame can be processed.  Raises the start-up error (bad source, sink, model) here."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the engine is already running; stop() it first")
        self._validate()
        self._stop_evt.clear()
        self._ready.clear()
        self._done.clear()
        self._error = None
        self._reset_run()
        self._thread = threading.Thread(target=self._run, name="livefoley-engine", daemon=True)
        self._thread.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if deadline is not None and time.monotonic() > deadline:
                self.stop()
                raise EngineError(f"the engine did not start within {timeout:g} s")
        if self._error is not None and not self._started_ok:
            self._thread.join()
            err = self._error
            raise err
        return self

    def _validate(self) -> None:
        """Reject bad source / sink strings before the (slow) model load."""
        from audio.sinks import build_sinks
        from capture.registry import parse_source

        cfg = self.config
        if self._source_obj is None:
            parse_source(cfg.source)
        build_sinks(list(cfg.sinks), record=cfg.record, volume=self._volume, blocksize=cfg.blocksize,
                   prefill_frames=1, capacity_frames=cfg.capacity_frames)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to end (duration reached, source ended, stop, or an error); True if it ended."""
        return self._done.wait(timeout)

    def request_stop(self) -> None:
        """Ask the worker to stop after the current slot (safe from a signal handler)."""
        self._stop_evt.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop and wait for the worker, which closes the sinks (a recording is finalised) and the
        capture thread."""
        self._stop_evt.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
            if t.is_alive():
                log.warning("the engine worker did not stop within %.0f s", timeout)

    def run(self) -> dict:
        """Start, run until the duration / end of the source / Ctrl-C, stop; returns :meth:`stats`.
        Raises the error that stopped the engine, if any."""
        self.start()
        try:
            self.wait()
        finally:
            self.stop()
        self.raise_error()
        return self.stats()

    def raise_error(self) -> None:
        """Re-raise the error that stopped the worker (no-op after a clean run)."""
        if self._error is not None:
            raise self._error

    @property
    def error(self) -> BaseException | None:
        return self._error

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._done.is_set()

    def __enter__(self) -> LiveEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control ---------------------------------------------------------------------------------------
    def configure(self, *, model: Any = None, nfe: int | None = None, guidance: float | None = None,
                  volume: float | None = None) -> cf.Future:
        """Change the model (a name / folder, or a loaded generator), NFE, ω or volume while running.

        Volume applies at once (to chunks written from now on).  The rest is applied by the worker
        between slots; the returned future resolves when it was (or raises the error, e.g. an NFE the
        model does not support — the engine then keeps its previous settings).  A model is loaded on a
        helper thread while the old one keeps playing; the swap restarts the stream state."""
        if guidance is not None and not (math.isfinite(guidance) and guidance >= 0):
            raise EngineError(f"the guidance ω must be a finite number ≥ 0 (1 = no guidance); got {guidance}")
        if volume is not None:
            from audio.sinks import check_volume

            self._volume = check_volume(volume)
            sinks = self._sinks
            if sinks is not None:
                sinks.set_volume(self._volume)
        fut: cf.Future = cf.Future()
        if model is None and nfe is None and guidance is None:
            fut.set_result(None)
            return fut
        if not self.running:
            fut.set_exception(EngineError("the engine is not running; configure it before start() instead"))
            return fut
        if model is not None and not hasattr(model, "stream"):
            name = str(model)
            loaded: cf.Future = cf.Future()

            def load() -> None:
                try:
                    new = self._load_generator(name)
                    self._optimise(new)
                    with new.stream(seed=self.config.seed) as warm:
                        self._warm_up(warm)
                    loaded.set_result(new)
                except BaseException as err:  # noqa: BLE001 - handed to the caller through the future
                    loaded.set_exception(err)

            threading.Thread(target=load, name="livefoley-model-loader", daemon=True).start()
            self._controls.put(_Control("model", dict(loader=loaded, nfe=nfe, guidance=guidance), fut))
        else:
            self._controls.put(_Control("model" if model is not None else "settings",
                                        dict(generator=model, nfe=nfe, guidance=guidance), fut))
        return fut

    def reset(self) -> cf.Future:
        """Scene change: forget the stream's past (KV cache, VAE state, previous frame) at the next slot."""
        fut: cf.Future = cf.Future()
        if not self.running:
            fut.set_exception(EngineError("the engine is not running"))
            return fut
        self._controls.put(_Control("reset", {}, fut))
        return fut

    # -- the worker ------------------------------------------------------------------------------------
    def _load_generator(self, name: str):

        from model.generator import load_generator

        log.info("loading model %s on %s", name, self.config.device)
        return load_generator(name, device=self.config.device, dinov2_weights=self.config.dinov2_weights)

    def _optimise(self, gen) -> None:
        """``config.optimize``: the fastest compiled DINOv2 for every thread count vision runs with here
        (all N on the waiting rungs, ⌊N/2⌋ on the vision thread), and the audio path's linear layers
        in int8 where that is faster at the counts it runs with (N, ⌈N/2⌉)."""
        if not self.config.optimize or gen.device.type != "cpu":
            return
        from model.optimize import optimize_audio, optimize_vision

        n, audio, vision = self._thread_split
        optimize_audio(gen, tuple(sorted({n, audio})))  # ~3 s of timing, once per loaded model
        counts = tuple(sorted({n, vision}))
        backbone = gen.model.tokenizer.backbone
        if backbone.fast_choice and set(counts) <= set(backbone.fast_choice):
            return
        log.info("optimised vision for %s thread(s): loading what this CPU kept, or compiling and measuring "
                 "every candidate (once per CPU)…", counts)
        log.info("optimised vision path ready in %.1f s", optimize_vision(backbone, counts))

    def _open_source(self):
        if self._source_obj is not None:
            src, self._source_obj = self._source_obj, None
            return src
        from capture.registry import open_source

        return open_source(self.config.source, **self.config.source_options)

    def _run(self) -> None:
        from audio.sinks import DeviceSink, build_sinks
        from capture.thread import CaptureThread

        cfg = self.config
        session = None
        sinks = None
        capture = None

        # N threads in all: the worker takes all N on the waiting rungs, ⌈N/2⌉ on the pipelined ones,
        # where the vision thread has ⌊N/2⌋ beside it (at least 1 each)
        n = choose_threads(cfg.threads)  # None: one per idle core (a core another process keeps busy gets none)
        self._thread_split = (n, max(1, (n + 1) // 2), max(1, n // 2))
        self._vision_thread = VisionThread(threads=self._thread_split[2], on_encoded=self._on_encoded)
        try:
            if self._generator is None:
                self._generator = self._load_generator(cfg.model)
            gen = self._generator
            self._optimise(gen)
            set_thread_torch_threads(self._thread_split[0])
            session = self._open_session(gen)
            self._choose_start_rung(self._warm_up(session))
            self._apply_rung(session)
            sinks = build_sinks(list(cfg.sinks), record=cfg.record, volume=self._volume,
                               blocksize=cfg.blocksize, prefill_frames=1, capacity_frames=cfg.capacity_frames)
            sinks.open()
            self._sinks = sinks
            self._device = next((s for s in sinks.sinks if isinstance(s, DeviceSink)), None)
            capture = CaptureThread(self._open_source(), fps=CONTRACT.fps, queue_size=cfg.queue_size,
                                    stall_timeout=cfg.stall_timeout_s)
            self._source_name = capture.source.name
            capture.start()
            self._capture = capture
            self._started_at = time.monotonic()
            self._rss_start = rss_mib()
            self._started_ok = True
            self._ready.set()
            self._loop(session, sinks, capture)
        except BaseException as err:  # noqa: BLE001 - reported to start() / wait() callers
            if not isinstance(err, LivefoleyError):
                log.error("the live engine failed", exc_info=True)
            self._error = err
            self._end_reason = self._end_reason or f"error: {err}"
        finally:
            self._ended_at = time.monotonic()
            try:
                self._vision_thread.close()
            finally:
                if capture is not None:
                    self._final_capture_stats = capture.stats()
                    capture.stop()
                self._close_sinks(sinks)
                if self._stream_session is not None:
                    self._stream_session.__exit__(None, None, None)
                    self._stream_session = None
                self._capture = None
                self._ready.set()
                self._done.set()

    def _close_sinks(self, sinks) -> None:
        if sinks is None:
            return
        try:
            sinks.close()
        except BaseException as err:  # noqa: BLE001 - keep the first error; closing must finish
            log.warning("closing the sinks: %s", err)
            if self._error is None:
                self._error = err
        finally:
            self._final_sink_stats = sinks.stats()
            self._sinks = None

    def _open_session(self, gen):
        nfe = gen.check_nfe(self._nfe) if self._nfe is not None else gen.nfe
        guidance = self._guidance if self._guidance is not None else gen.guidance
        session = gen.stream(seed=self.config.seed, nfe=nfe, guidance=guidance, timing=True)
        session.__enter__()
        self._stream_session = session  # closed by _run's finally (whichever model is current then)
        self._base_nfe, self._base_guidance = nfe, guidance
        rungs = build_ladder(nfe=nfe, guidance=guidance, valid_nfe=tuple(gen.valid_nfe))
        self._policy = DegradationPolicy(config=self.config.policy, rungs=rungs)
        self._token = None
        self._token_frame = None
        self._vision_thread.set_session(session)
        self._last_offer = -(10**9)
        self._times = _StepTimes(self.config.policy.alpha)
        self._miss_ewma = 0.0
        self._apply_rung(session)
        return session

    def _warm_up(self, session) -> tuple[float, float] | None:
        """A few steps on a blank frame (the first steps of a model are slow), then a fresh stream.
        Returns the last step's (vision ms, audio-path ms, prefeed ms), or None without warm-up."""
        if self.config.warmup_steps <= 0:
            return None
        blank = np.zeros((360, 640, 3), np.uint8)
        for _ in range(self.config.warmup_steps):
            t0 = time.perf_counter()
            token = session.encode(blank)
            t1 = time.perf_counter()
            session.step_token(token)
            t2 = time.perf_counter()
            session.prefeed()
            t3 = time.perf_counter()
        session.reset()
        return (t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000

    def _predict(self, rung: Rung) -> float | None:
        """:func:`plugin.live.policy.predict_ms` for ``rung``, from the times measured on rungs of its
        kind (waiting or pipelined); None before any were."""
        kind = rung.wait_for_vision
        v, a = self._times.get(kind, "vision"), self._times.get(kind, "audio")
        if v is None or a is None:
            return None
        return predict_ms(rung, vision=v, audio=a, prefeed=self._times.get(kind, "prefeed") or 0.0,
                          encode_slot_limit=self.config.encode_slot_limit_ms)

    def _choose_start_rung(self, measured: tuple[float, float, float] | None) -> None:
        """Start on the first rung predicted to fit (< ``high`` × T) by the warm-up step's vision and
        audio-path times, instead of climbing there through a second of late slots."""
        policy = self._policy
        if measured is None:
            return
        for part, ms in zip(_StepTimes.PARTS, measured, strict=True):
            self._times.add(True, part, ms)
        c = self.config.policy
        if not (c.enabled and c.auto_start) or policy.level != 0:
            return
        for level in range(policy.top + 1):
            expected = self._predict(policy.rungs[level])
            if expected is not None and expected < c.high * CONTRACT.frame_ms:
                break
        policy.start_at(level)
        if level:
            log.info("warm-up step: vision %.1f ms, audio path %.1f ms, prefeed %.1f ms: starting on rung %s",
                     *measured, policy.rung.name)

    def _apply_rung(self, session) -> None:
        """Configure ``session`` for the current rung (on the worker thread): NFE, ω, and the worker's
        torch threads — all ``threads`` on the waiting rungs (vision and the audio path take turns),
        ⌈N/2⌉ on the pipelined ones (the vision thread has the other ⌊N/2⌋)."""
        rung = self._policy.rung
        n, audio, _ = self._thread_split
        set_thread_torch_threads(n if rung.wait_for_vision else audio)
        nfe = rung.nfe if rung.nfe is not None else self._base_nfe
        guidance = rung.guidance if rung.guidance is not None else self._base_guidance
        session.configure(nfe=nfe, guidance=guidance)

    def _on_encoded(self, ms: float, *, waiting: bool = False) -> None:
        """Called after each encode: on the vision thread, or on the worker (``waiting``)."""
        self._vision.add(ms)
        self.counts["vision_encoded"] += 1
        self._times.add(waiting, "vision", ms)

    def _take_token(self) -> None:
        """The vision thread's newest token, unless the worker already has a newer one."""
        token, frame = self._vision_thread.newest()
        if token is not None and (self._token_frame is None or frame.index > self._token_frame.index):
            self._token, self._token_frame = token, frame

    def _encode_here(self, session, frame) -> float:
        """Encode ``frame`` on the worker (the waiting rungs): the token is the frame's own, and vision
        runs on the worker's threads, one torch op at a time with the audio path.  Never at the same
        time as an encode on the vision thread (the tokenizer's stream state is shared).  Returns
        the encode's milliseconds."""
        with self._vision_thread.encoding:
            t0 = time.perf_counter()
            token = session.encode(frame)
            ms = (time.perf_counter() - t0) * 1000
        self._token, self._token_frame = token, frame
        self._last_offer = frame.index
        self._on_encoded(ms, waiting=True)
        return ms

    def _dispatch(self, capture, inbox: Inbox) -> None:
        """The dispatcher thread: on the pipelined rungs each 30-fps frame from the capture thread
        (every ``vision_every``-th) is offered to the vision thread the moment it arrives (so that
        vision works while the worker is busy); every frame is queued for the worker."""
        from capture.base import CaptureError

        try:
            while not self._stop_evt.is_set():
                try:
                    frame = capture.get(timeout=0.25)
                except TimeoutError:
                    continue
                if frame is None:
                    break
                rung = self._policy.rung
                if not rung.wait_for_vision and self._token is not None:  # waiting rungs: the worker encodes
                    if frame.index - self._last_offer >= rung.vision_every:
                        self._vision_thread.offer(frame)
                        self._last_offer = frame.index
                    else:
                        self.counts["vision_skipped"] += 1
                inbox.put(frame)
        except CaptureError as err:
            inbox.fail(err)
        except BaseException as err:  # noqa: BLE001 - handed to the worker
            log.error("the frame dispatcher failed", exc_info=True)
            inbox.fail(err)
        finally:
            inbox.close()

    def _vision_budget_s(self, device, t_pick: float) -> tuple[float, float]:
        """How long (from now) a waiting rung's encode of the current frame may take: the vision
        deadline — until ``deadline_fraction`` × T minus the audio path's time has passed since the
        frame was taken (a vision slot may overrun into the next frame, never by a whole one: no
        frame is skipped for it) — and what the device ring affords: until it would run down below
        one device block before the chunk is written (the device takes a block at a time: less, and
        it underruns); ``inf`` without a playing device."""
        a_s = (self._times.get(True, "audio") or 0.0) / 1000
        deadline = t_pick + self.config.policy.deadline_fraction * CONTRACT.frame_s - a_s - time.monotonic()
        ring = math.inf
        if device is not None and device.started:
            ahead = device.delay_s - device.latency_s
            ring = ahead - self.config.blocksize / CONTRACT.sample_rate - a_s
        return deadline, ring

    def _loop(self, session, sinks, capture) -> None:
        cfg = self.config
        hop = CONTRACT.hop
        device = self._device
        live = capture.source.live
        cushion = cfg.cushion_samples
        if device is not None:
            # silence ahead of the first chunk: the cushion (docs/live-engine.md)
            device.write(np.zeros((CONTRACT.channels, max(cushion, 1)), np.float32))
        limit = None if cfg.duration_s is None else max(1, round(cfg.duration_s * CONTRACT.fps))
        inbox = Inbox(live=live)
        dispatcher = threading.Thread(target=self._dispatch, args=(capture, inbox),
                                      name="livefoley-dispatch", daemon=True)
        dispatcher.start()
        try:
            self._slots(session, sinks, device, inbox, live, cushion, hop, limit)
        finally:
            self._stop_evt.set()
            inbox.close()
            dispatcher.join(5)
            self._rss.add(rss_mib())

    def _slots(self, session, sinks, device, inbox, live, cushion, hop, limit) -> None:
        cfg = self.config
        last_index: int | None = None
        underruns_seen = 0
        underflows_seen = 0
        ring = RingLedger(LevelTarget(cushion=cushion, hop=hop, blocksize=cfg.blocksize,
                                      drift_window=cfg.drift_window), fill_in=cfg.fill_in, cut=live)
        while True:
            session = self._apply_controls(session)
            frame = inbox.get(self._stop_evt)
            if frame is None:
                ended = "stopped" if self._stop_evt.is_set() else "source ended"
                self._end_reason = self._end_reason or ended
                return
            if limit is not None and frame.index >= limit:
                self._end_reason = "duration reached"
                return
            t_pick = time.monotonic()
            gap = 0 if last_index is None else max(0, frame.index - last_index - 1)
            last_index = frame.index
            self._cur_index = frame.index
            self.counts["slots"] += 1 + gap
            self.counts["skipped_slots"] += gap
            slot = self.counts["slots"]
            late = False
            if device is not None:
                if not live:
                    self._pace_to_device(device, cushion + hop)
                dev = device.stats()
                flagged = dev["status_flags"].get("output_underflow", 0)
                new_trouble = dev["underruns"] > underruns_seen or flagged > underflows_seen
                if new_trouble and self.counts["chunks"] >= CONTRACT.fps:
                    late = True  # after start-up
                    log.info("underrun before slot %d on rung %s (%d slots after its last change; the slot "
                             "before took %.1f ms, the ring held %.1f ms at its write)", slot,
                             self._policy.rung.name, self._policy.slots_on_rung, self._last_busy_ms,
                             self._last_ahead / CONTRACT.sample_rate * 1000)
                underflows_seen, underruns_seen = flagged, dev["underruns"]
                ring.account(underrun_samples=dev["underrun_samples"], skipped=gap)
                if ring.trim_now():
                    self.counts["trimmed"] += 1
                    continue
            policy = self._policy
            if self._token is None:  # a stream's first token is always encoded
                self._encode_here(session, frame)
            elif policy.rung.wait_for_vision:
                if frame.index - self._last_offer >= policy.rung.vision_every:
                    deadline, affordable = self._vision_budget_s(device, t_pick)
                    expected = (self._times.get(True, "vision") or 0.0) / 1000
                    # the ring postpones an encode by one cadence at most: on a rung too slow for the
                    # machine the ring stays low, and the sound would never follow the picture again
                    overdue = frame.index - self._last_offer >= 2 * policy.rung.vision_every
                    if expected > affordable and not overdue:
                        missed = True  # encoding now would let the device ring run dry: keep the token
                        too_slow = expected > deadline
                    else:
                        ms = self._encode_here(session, frame) / 1000
                        missed, too_slow = ms > min(deadline, affordable), ms > deadline
                    late = late or missed
                    # vision itself too slow for its deadline (whatever the ring): waiting for it is futile
                    a = cfg.policy.miss_alpha
                    self._miss_ewma = (1 - a) * self._miss_ewma + a * float(too_slow)
                else:
                    self.counts["vision_skipped"] += 1
            else:
                self._take_token()
            fresh = self._token_frame is not None and self._token_frame.index == frame.index
            self.counts["fresh_slots" if fresh else "stale_slots"] += 1
            chunk, a_ms = self._audio_step(session)
            chunk = self._cut(chunk, ring.cut_now())  # the ring sits a little high: that much shorter
            compute_ms = (time.monotonic() - t_pick) * 1000
            ahead = self._write(sinks, device, chunk, compute_ms)
            busy_ms = compute_ms  # the slot's time, the wait for vision included
            # ring level control (device only)
            if (device is not None and device.started and ahead is not None
                    and ring.after_write(ahead) is Action.FILL_IN):
                chunk2, a2 = self._audio_step(session)
                self._write(sinks, device, chunk2, None)
                busy_ms += a2
                self.counts["fill_ins"] += 1
            busy_ms += self._prefeed(session)
            self._last_busy_ms, self._last_ahead = busy_ms, (ahead or 0)
            if device is not None and self._underruns_startup is None and slot >= CONTRACT.fps:
                self._underruns_startup = device.stats()["underruns"]
            if late:
                self.counts["late_slots"] += 1
            was_pipelined = not policy.rung.wait_for_vision
            pipelined = next((i for i, r in enumerate(policy.rungs) if not r.wait_for_vision), None)
            if (cfg.policy.enabled and policy.rung.wait_for_vision and self._miss_ewma > cfg.policy.miss_limit
                    and pipelined is not None and pipelined <= policy.top):
                # vision keeps missing its deadline: waiting for it only delays the audio; pipeline it
                policy.jump(pipelined)
                self._miss_ewma = 0.0
                log.info("degradation: vision keeps missing its deadline; rung %s after %d slots",
                         policy.rung.name, slot)
                self._apply_rung(session)
            elif policy.observe(busy_ms, late=late, predict=self._predict) is not None:
                log.info("degradation: rung %s after %d slots", policy.rung.name, slot)
                self._apply_rung(session)
            if was_pipelined and policy.rung.wait_for_vision and device is not None and device.started:
                self._top_up(session, sinks, device, ring)
            if slot % 300 == 0:
                self._rss.add(rss_mib())

    def _top_up(self, session, sinks, device, ring: RingLedger) -> None:
        """A pipelined rung just gave way to one that waits for vision: from the next slot on each chunk
        is written an encode later in its frame.  Write that much ahead now (``RingLedger.top_up``: a
        chunk from the current token, cut to length) so those writes still find the cushion."""
        later_ms = self._times.get(True, "vision") or self._times.get(False, "vision") or 0.0
        n = ring.top_up(round(later_ms * CONTRACT.sample_rate / 1000))
        if not n:
            return
        chunk, _ = self._audio_step(session)
        self._write(sinks, device, self._cut(chunk, max(chunk.shape[-1] - n, 0)), None)
        self.counts["top_ups"] += 1
        self._prefeed(session)

    def _cut(self, chunk, n: int):
        """``chunk`` with ``n`` samples taken out (:func:`audio.jitter.shorten`), counted in ``cut_samples``."""
        if not n:
            return chunk
        self.counts["cut_samples"] += n
        return shorten(chunk, n)

    def _pace_to_device(self, device, target: int) -> None:
        """Non-live sources with a device: wait until the ring has room down to ``target`` samples."""
        while not self._stop_evt.is_set() and device.started:
            ahead = device.delay_s - device.latency_s
            excess = ahead - target / CONTRACT.sample_rate
            if excess <= 0:
                return
            time.sleep(min(excess, 0.05))

    def _audio_step(self, session):
        t0 = time.perf_counter()
        chunk = session.step_token(self._token)
        a_ms = (time.perf_counter() - t0) * 1000
        self._times.add(self._policy.rung.wait_for_vision, "audio", a_ms)
        self._audio.add(a_ms)
        return chunk, a_ms

    def _prefeed(self, session) -> float:
        """Feed the slot's latent to the transformer now, while the next frame is awaited, so that
        the next slot's audio path is one token step shorter (``StreamSession.prefeed``); its ms."""
        t0 = time.perf_counter()
        session.prefeed()
        ms = (time.perf_counter() - t0) * 1000
        self._times.add(self._policy.rung.wait_for_vision, "prefeed", ms)
        return ms

    def _write(self, sinks, device, chunk, compute_ms: float | None) -> int | None:
        """Hand the chunk to the sinks and record its latency; returns the device ring level (samples)
        ahead of the chunk at hand-over (None without a device)."""
        queue_s = 0.0
        ahead = None
        if device is not None:
            queue_s = device.delay_s
            ahead = round((queue_s - device.latency_s) * CONTRACT.sample_rate)
        t_hand = time.monotonic()
        sinks.write(chunk)
        if self._first_chunk_at is None:
            self._first_chunk_at = t_hand
        self._last_chunk_at = t_hand
        self.counts["chunks"] += 1
        src = self._token_frame
        self._g2e.add((t_hand - src.captured_at + queue_s) * 1000)
        self._queue_ms.add(queue_s * 1000)
        self._hand_times.add(t_hand)
        self._chunk_samples.add(chunk.shape[-1])
        if compute_ms is not None:
            self._compute.add(compute_ms)
        self._age.add(max(0, self._cur_index - src.index))
        return ahead

    def _apply_controls(self, session):
        pending: list[_Control] = []
        while True:
            try:
                pending.append(self._controls.get_nowait())
            except queue.Empty:
                break
        for ctl in pending:
            if ctl.future.cancelled():
                continue
            loader = ctl.args.get("loader")
            if loader is not None and not loader.done():
                self._controls.put(ctl)  # still loading: the old model keeps playing; look again next slot
                continue
            try:
                session = self._apply_control(session, ctl)
            except LivefoleyError as err:
                log.warning("configure failed: %s", err)
                ctl.future.set_exception(err)
            else:
                ctl.future.set_result(None)
        return session

    def _apply_control(self, session, ctl: _Control):
        if ctl.kind == "reset":
            with self._vision_thread.paused():
                session.reset()
            # the previous token stays as the fallback until the new scene's first token is ready,
            # so the reset costs no wait (the VAE restarts from its initial state: a hard cut)
            self.counts["resets"] += 1
            return session
        nfe, guidance = ctl.args.get("nfe"), ctl.args.get("guidance")
        if ctl.kind == "settings":
            gen = self._generator
            if nfe is not None:
                gen.check_nfe(nfe)
            self._nfe = nfe if nfe is not None else self._nfe
            self._guidance = guidance if guidance is not None else self._guidance
            self._base_nfe = nfe if nfe is not None else self._base_nfe
            self._base_guidance = guidance if guidance is not None else self._base_guidance
            self._policy.set_rungs(build_ladder(nfe=self._base_nfe, guidance=self._base_guidance,
                                                valid_nfe=tuple(gen.valid_nfe)))
            self._apply_rung(session)
            return session
        # a new model (its loader has finished: see _apply_controls)
        loader: cf.Future | None = ctl.args.get("loader")
        new = loader.result() if loader is not None else ctl.args["generator"]
        if nfe is not None:
            new.check_nfe(nfe)
        with self._vision_thread.paused():
            session.__exit__(None, None, None)
            self._stream_session = None
            self._generator = new
            if nfe is not None:
                self._nfe = nfe
            if guidance is not None:
                self._guidance = guidance
            try:
                session = self._open_session(new)
            except LivefoleyError:
                # e.g. the previous NFE does not exist in the new model: fall back to its defaults
                self._nfe = nfe
                session = self._open_session(new)
        self.counts["model_swaps"] += 1
        return session

    # -- reporting -------------------------------------------------------------------------------------
    def stats(self) -> dict:
        """A snapshot (safe from any thread); after the run, the final figures."""
        now = time.monotonic()
        counts = dict(self.counts)
        t0, t1 = self._first_chunk_at, self._last_chunk_at
        wall = (t1 - t0) if (t0 is not None and t1 is not None) else 0.0
        chunks = counts["chunks"]
        sink_stats = self._final_sink_stats
        if sink_stats is None and self._sinks is not None:
            sink_stats = self._sinks.stats()
        cap_stats = self._final_capture_stats
        if cap_stats is None and self._capture is not None:
            cap_stats = self._capture.stats()
        dev = None
        if sink_stats is not None:
            dev = next((s for s in sink_stats.get("sinks", []) if s.get("kind") == "device"), None)
        underruns = dev["underruns"] if dev else 0
        startup = self._underruns_startup if self._underruns_startup is not None else underruns
        policy = self._policy
        rss = self._rss.values()
        gen = self._generator
        out = {
            "source": self._source_name,
            "sinks": sink_stats["name"] if sink_stats else None,
            "model": getattr(getattr(gen, "config", None), "name", self.config.model),
            "threads": dict(zip(("worker", "worker_pipelined", "vision_thread"),
                                self._thread_split, strict=True)),
            "end_reason": self._end_reason or ("running" if self.running else ""),
            "wall_s": round((self._ended_at or now) - self._started_at, 3) if self._started_at else 0.0,
            "stream_s": round((chunks * CONTRACT.hop - counts["cut_samples"]) / CONTRACT.sample_rate, 3),
            "achieved_fps": round((chunks - 1) / wall, 3) if wall > 0 else None,
            **counts,
            "vision_replaced": self._vision_thread.replaced if self._vision_thread else 0,
            "glass_to_ear_ms": self._g2e.summary(),
            "compute_ms": self._compute.summary(),
            "audio_path_ms": self._audio.summary(),
            "vision_ms": self._vision.summary(),
            "device_queue_ms": self._queue_ms.summary(),
            "token_age_frames": self._age.summary(),
            "underruns": underruns,
            "underruns_startup": startup,
            "underruns_after_startup": underruns - startup,
            "underrun_samples": dev["underrun_samples"] if dev else 0,
            # underflows the sound system itself reported (PortAudio status flags): the callback ran
            # too late even though the ring had audio (a starved process; small blocks make it likelier)
            "device_underflows": dev["status_flags"].get("output_underflow", 0) if dev else 0,
            "overflows": dev["overflows"] if dev else 0,
            "device_latency_ms": round(1000 * dev["latency_s"], 2) if dev else None,
            "capture": None if cap_stats is None else {
                k: cap_stats[k] for k in ("captured", "emitted", "delivered", "dropped", "repeated",
                                          "achieved_fps", "source_fps", "state", "source_stats")},
            "policy": None if policy is None else {
                "rung": policy.rung.name,
                "ladder": [r.name for r in policy.rungs],
                "every_frame": [r.name for r in policy.rungs if r.vision_every == 1],
                "changes": policy.changes,
                "ewma_ms": None if policy.ewma is None else round(policy.ewma, 2),
                "seconds_at": {r.name: round(n / CONTRACT.fps, 2)
                               for r, n in zip(policy.rungs, policy.slots_at, strict=False) if n},
            },
            "nfe": self._nfe if self._base_nfe is None else self._base_nfe,
            "cfg": self._guidance if self._base_guidance is None else self._base_guidance,
            "volume": self._volume,
            "rss_mb": {"start": None if self._rss_start is None else round(self._rss_start, 1),
                       "end": round(float(rss[-1]), 1) if rss.size else None,
                       "max": round(float(rss.max()), 1) if rss.size else None},
            "error": None if self._error is None else str(self._error),
        }
        out["sink_stats"] = sink_stats
        return out

    SERIES = ("glass_to_ear_ms", "compute_ms", "audio_path_ms", "vision_ms", "device_queue_ms",
              "token_age_frames", "hand_time", "chunk_samples", "rss_mb")

    def series(self, name: str) -> np.ndarray:
        """A copy of the per-chunk history of one metric, oldest first (``hand_time``: the monotonic
        moment each chunk was handed to the sinks; ``chunk_samples``: its length, a hop unless the
        ring cut it shorter; ``vision_ms``: per encode; ``rss_mb``: every 300 slots)."""
        rings = {"glass_to_ear_ms": self._g2e, "compute_ms": self._compute, "audio_path_ms": self._audio,
                 "vision_ms": self._vision, "device_queue_ms": self._queue_ms, "token_age_frames": self._age,
                 "hand_time": self._hand_times, "chunk_samples": self._chunk_samples, "rss_mb": self._rss}
        if name not in rings:
            raise KeyError(f"unknown series {name!r}; valid: {', '.join(self.SERIES)}")
        return rings[name].values().copy()

    def status_line(self) -> str:
        """One compact line over the last ~2 s, e.g. for a terminal status."""
        n = 2 * CONTRACT.fps
        hand = self._hand_times.values(n)
        fps = (hand.size - 1) / (hand[-1] - hand[0]) if hand.size > 1 and hand[-1] > hand[0] else 0.0
        g = self._g2e.values(n)
        c = self._compute.values(n)
        policy = self._policy
        dev = self._device if self._sinks is not None else None
        xr = dev.stats()["underruns"] if dev is not None else 0
        elapsed = time.monotonic() - self._started_at if self._started_at else 0.0
        def fmt(v: np.ndarray) -> str:
            p = percentiles(v)
            return f"{p['p50']:.0f}/{p['p95']:.0f}" if p else "-/-"

        rung = policy.rung.name if policy else "-"
        return (f"live {elapsed:6.1f}s | {fps:4.1f} fps | g2e {fmt(g)} ms | step {fmt(c)} ms | {rung} "
                f"nfe {'-' if self._base_nfe is None else self._base_nfe} "
                f"ω {'-' if self._base_guidance is None else self._base_guidance} | "
                f"skip {self.counts['skipped_slots']} | xrun {xr}")
