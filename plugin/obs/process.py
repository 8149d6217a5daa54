"""Process control for the OBS script: run ``livefoley obs live …`` as a separate process and stop it.

Plain Python (standard library only), so it is tested outside OBS and imported by the script inside
OBS's interpreter.  The model never runs inside OBS: :class:`EngineProcess` launches the
``livefoley`` console script (its path is a setting; :func:`find_livefoley` looks beside the
current interpreter and on ``PATH``, never assuming that OBS's ``sys.executable`` is a Python with
livefoley installed), watches it, and stops it — SIGTERM (the engine finalises its recording),
wait, then kill — on stop, on script unload and when OBS quits.  The password is handed over in the
child's environment (``LIVEFOLEY_OBS_PASSWORD``), never on its command line.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EngineOptions:
    """What the script's settings choose (``None``: the engine's default)."""

    source: str
    output: str = "device"
    model: str = "default"
    nfe: int | None = None
    cfg: float | None = None
    volume: float = 1.0
    host: str = "localhost"
    port: int = 4455
    extra: tuple[str, ...] = ()

    def argv(self, livefoley: str) -> list[str]:
        if not self.source:
            raise ValueError("choose the OBS source livefoley should watch")
        cmd = [livefoley, "obs", "live", "--source", self.source, "--sink", self.output, "--model", self.model,
               "--volume", f"{self.volume:g}", "--host", self.host, "--port", str(self.port), "--status"]
        if self.nfe:
            cmd += ["--nfe", str(int(self.nfe))]
        if self.cfg is not None:
            cmd += ["--cfg", f"{self.cfg:g}"]
        return cmd + list(self.extra)


def find_livefoley(configured: str | None = None) -> str | None:
    """The ``livefoley`` console script: ``configured`` if it exists, else beside this interpreter,
    else on PATH; None when not found."""
    names = ["livefoley.exe", "livefoley"] if sys.platform == "win32" else ["livefoley"]
    if configured:
        return configured if Path(configured).is_file() else None
    for folder in (Path(sys.executable).parent, Path(sys.prefix) / "bin", Path(sys.prefix) / "Scripts"):
        for n in names:
            if (folder / n).is_file():
                return str(folder / n)
    return shutil.which("livefoley")


class EngineProcess:
    """One engine child process at a time.  ``status`` is a one-line human status; ``lines`` the
    last output lines (its status line included)."""

    def __init__(self, *, stop_timeout: float = 5.0, keep_lines: int = 50) -> None:
        self.stop_timeout = float(stop_timeout)
        self.proc: subprocess.Popen | None = None
        self.lines: collections.deque[str] = collections.deque(maxlen=keep_lines)
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self.last_exit: int | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, options: EngineOptions, *, livefoley: str | None = None, password: str | None = None,
              env: dict | None = None) -> None:
        """Launch ``livefoley obs live …``; raises ``RuntimeError`` with the fix when it cannot."""
        if self.running:
            raise RuntimeError("livefoley is already running; stop it first")
        exe = find_livefoley(livefoley)
        if exe is None:
            raise RuntimeError(f"livefoley executable not found{f' at {livefoley}' if livefoley else ''}: "
                               "set 'livefoley executable' to the path of the livefoley console script "
                               "(e.g. ~/.venv/bin/livefoley, or …\\Scripts\\livefoley.exe)")
        child_env = dict(os.environ if env is None else env)
        if password:
            child_env["LIVEFOLEY_OBS_PASSWORD"] = password
        child_env.setdefault("PYTHONUNBUFFERED", "1")
        self.lines.clear()
        flags = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if sys.platform == "win32" else {}
        self.proc = subprocess.Popen(options.argv(exe), env=child_env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                     **flags)
        self.last_exit = None
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip())

    def stop(self) -> int | None:
        """Terminate (the engine closes its sinks), wait up to ``stop_timeout``, then kill.  Returns the
        exit code (None when nothing ran); an engine that ends on the SIGTERM sent here (it exits 143, as
        for any SIGTERM) stopped as asked and returns 0."""
        proc = self.proc
        if proc is None:
            return None
        asked = proc.poll() is None
        if asked:
            proc.terminate()
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(self.stop_timeout)
        if self._reader is not None:
            self._reader.join(1.0)
        code = proc.returncode
        self.last_exit = 0 if asked and code in (-signal.SIGTERM, 128 + signal.SIGTERM) else code
        self.proc = None
        return self.last_exit

    def poll(self) -> int | None:
        """The exit code if the process ended by itself (then it is forgotten), else None."""
        if self.proc is not None and self.proc.poll() is not None:
            return self.stop()
        return None

    @property
    def status(self) -> str:
        with self._lock:
            last = next((ln for ln in reversed(self.lines) if ln.strip()), "")
        if self.running:
            return f"running: {last}" if last else "starting…"
        if self.last_exit is None:
            return "stopped"
        if self.last_exit == 0:
            return "stopped"
        return f"exited with code {self.last_exit}: {last}"

    def wait_for(self, predicate, timeout: float) -> bool:
        """Wait until ``predicate(lines)`` is true (tests, diagnostics)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                lines = list(self.lines)
            if predicate(lines):
                return True
            time.sleep(0.05)
        return False


__all__ = ["EngineOptions", "EngineProcess", "find_livefoley"]
