"""Which OBS to talk to, and with which password: :func:`resolve_target`.

The arguments given, else ``LIVEFOLEY_OBS_HOST`` / ``_PORT``, else the saved settings, else
localhost:4455; the password from ``LIVEFOLEY_OBS_PASSWORD`` or, on a terminal, an interactive prompt
— never from the command line, never logged or saved.  The websocket client itself, and the
``obs:NAME`` frame source that uses it, live below in :mod:`capture.obs`.
"""

from __future__ import annotations

import getpass
import os
import sys
import threading

from capture.obs.client import PASSWORD_ENV, ObsError, ObsTarget

HOST_ENV = "LIVEFOLEY_OBS_HOST"
PORT_ENV = "LIVEFOLEY_OBS_PORT"

_password_cache: dict[tuple[str, int], str] = {}
_cache_lock = threading.Lock()


def resolve_target(host: str | None = None, port: int | None = None, *, password: str | None = None,
                   prompt: bool | None = None) -> ObsTarget:
    """The OBS to talk to: ``host``/``port`` given, else ``LIVEFOLEY_OBS_HOST``/``_PORT``, else the saved
    settings, else localhost:4455.  The password: ``password`` given (programmatic use), else
    ``LIVEFOLEY_OBS_PASSWORD``, else an interactive prompt when ``prompt`` (default: stdin is a
    terminal), else none (fine when OBS has authentication off).  A prompted password is kept in
    this process's memory only, so one run asks once."""
    from plugin.obs.settings import load_settings

    saved = None
    if host is None or port is None:
        saved = load_settings()
    host = host or os.environ.get(HOST_ENV) or (saved.host if saved else "localhost")
    if port is None:
        env_port = os.environ.get(PORT_ENV)
        if env_port:
            try:
                port = int(env_port)
            except ValueError:
                raise ObsError(f"{PORT_ENV}={env_port!r} is not a port number") from None
        else:
            port = saved.port if saved else 4455
    if not 0 < int(port) < 65536:
        raise ObsError(f"OBS websocket port must be 1–65535; got {port}")
    key = (host, int(port))
    if password is None:
        password = os.environ.get(PASSWORD_ENV)
    if password is None:
        with _cache_lock:
            password = _password_cache.get(key)
    if password is None:
        if prompt is None:
            prompt = sys.stdin is not None and sys.stdin.isatty()
        if prompt:
            password = getpass.getpass(f"OBS websocket password for {host}:{port} (Tools → WebSocket "
                                       f"Server Settings; empty if none; or set {PASSWORD_ENV}): ")
            with _cache_lock:
                _password_cache[key] = password
        else:
            password = ""
    return ObsTarget(host=host, port=int(port), password=password)


__all__ = ["HOST_ENV", "PASSWORD_ENV", "PORT_ENV", "resolve_target"]
