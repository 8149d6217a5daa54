"""A robust obs-websocket 5 client over obsws-python.

obsws-python is a thin wrapper with sharp edges (measured, ../shared/TESTING.md): it does not match
replies to requests, so after a timeout the late reply is handed to the *next* call; one client is
not thread-safe; its default timeout is none; connection errors escape as raw socket exceptions;
it logs the password at INFO; and it silently reads a ``config.toml`` from the working directory
or home when host/port/password are not passed.  :class:`ObsClient` fixes each:

* every request has a timeout (``timeout`` seconds, per client; per call overridable);
* after a timeout, a dropped connection or a reply to some other request, the underlying socket is
  thrown away and the next call connects afresh (never reuses a connection that may be out of step);
* a client belongs to the thread that first used it (another thread gets a ``RuntimeError``):
  make one per thread;
* failures become :class:`ObsError` subclasses with a message that says what to do —
  :class:`ObsConnectionError` ("OBS not reachable at host:port — is Tools → WebSocket Server
  Settings enabled?"), :class:`ObsAuthError` (no / wrong password), :class:`ObsRequestError`
  (OBS refused a request: its status code and comment);
* host, port and password are always passed explicitly (no config.toml), and the ``obsws_python``
  logger is raised to CRITICAL so the password never reaches a log.

Where OBS is and its password come as an :class:`ObsTarget`, resolved by the application layer
(:func:`plugin.obs.target.resolve_target`: environment, saved settings, prompt); the password never
comes from the command line, and it is never logged or saved (:class:`ObsTarget`'s repr hides it).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from audio.errors import LivefoleyError

log = logging.getLogger(__name__)

PASSWORD_ENV = "LIVEFOLEY_OBS_PASSWORD"  # named in the errors; read by plugin.obs.target.resolve_target
DEFAULT_TIMEOUT_S = 2.0

# obsws-python logs "Connecting with parameters: ... password='…'" at INFO and every failure with
# a traceback: keep all of it out of our logs (we raise clear errors instead).
logging.getLogger("obsws_python").setLevel(logging.CRITICAL)

_SETTINGS_HINT = "is Tools → WebSocket Server Settings enabled (and the port the same)?"


class ObsError(LivefoleyError):
    """Something went wrong talking to OBS (the message says what to do)."""


class ObsConnectionError(ObsError):
    """OBS cannot be reached, or the connection was lost / timed out."""


class ObsTimeoutError(ObsConnectionError):
    """A request got no reply within the timeout (the connection is dropped)."""


class ObsAuthError(ObsError):
    """OBS wants a password and none or a wrong one was given."""


class ObsRequestError(ObsError):
    """OBS answered a request with a failure status.  ``code``: obs-websocket's RequestStatus code
    (600 = resource not found, 601 = resource already exists, …)."""

    def __init__(self, message: str, *, request: str, code: int, comment: str | None) -> None:
        super().__init__(message)
        self.request = request
        self.code = code
        self.comment = comment


NOT_FOUND = 600
REQUEST_FAILED = 702  # OBS took the request but could not do it now (e.g. "Failed to render screenshot")


@dataclass(frozen=True)
class ObsTarget:
    """Where OBS's websocket server is.  ``password`` is excluded from repr (never logged)."""

    host: str = "localhost"
    port: int = 4455
    password: str = field(default="", repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class ObsClient:
    """One connection to OBS, used from one thread; reconnects lazily after any failure.

    ``target``: where OBS is; ``timeout``: seconds each request (and the connect) may take.
    :meth:`call` sends a request and returns its ``responseData`` (a dict, ``{}`` when none)."""

    def __init__(self, *, target: ObsTarget, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 s; got {timeout}")
        self.target = target
        self.timeout = float(timeout)
        self._req = None  # obsws_python.ReqClient while connected
        self._owner: int | None = None
        self.connects = 0  # successful connections so far (1 + reconnects)
        self.drops = 0  # connections thrown away after a failure

    # -- connection ------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._req is not None

    def connect(self) -> ObsClient:
        """Connect now (otherwise the first :meth:`call` does).  Raises :class:`ObsConnectionError` /
        :class:`ObsAuthError`."""
        self._check_thread()
        if self._req is None:
            self._req = _open(self.target, self.timeout)
            self.connects += 1
        return self

    def close(self) -> None:
        """Drop the connection (a later call reconnects)."""
        req, self._req = self._req, None
        if req is not None:
            with contextlib.suppress(Exception):  # closing a dead socket
                req.base_client.ws.close()

    def __enter__(self) -> ObsClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_thread(self) -> None:
        me = threading.get_ident()
        if self._owner is None:
            self._owner = me
        elif self._owner != me:
            raise RuntimeError("an ObsClient is used by one thread only; make one per thread")

    def _drop(self) -> None:
        self.drops += 1
        self.close()

    # -- requests --------------------------------------------------------------------------------------
    def call(self, request: str, data: dict | None = None, *, timeout: float | None = None) -> dict[str, Any]:
        """Send one request; returns its response data.  Raises :class:`ObsRequestError` when OBS
        refuses it (the connection stays), :class:`ObsTimeoutError` / :class:`ObsConnectionError`
        when there is no (matching) reply (the connection is dropped; the next call reconnects)."""
        from websocket import WebSocketException, WebSocketTimeoutException

        self.connect()
        ws = self._req.base_client.ws
        wait = self.timeout if timeout is None else float(timeout)
        try:
            ws.settimeout(wait)
            response = self._req.base_client.req(request, data)
        except Exception as err:  # noqa: BLE001 - every transport failure ends this connection
            self._drop()
            from obsws_python.error import OBSSDKTimeoutError

            if isinstance(err, (OBSSDKTimeoutError, WebSocketTimeoutException, TimeoutError)):
                raise ObsTimeoutError(
                    f"OBS at {self.target.address} did not answer {request} within {wait:g} s; the "
                    "connection was reset (OBS busy or frozen? the next request reconnects)") from None
            if isinstance(err, (WebSocketException, OSError, ValueError, KeyError)):
                raise ObsConnectionError(
                    f"the connection to OBS at {self.target.address} was lost during {request} "
                    f"({type(err).__name__}: {err}); is OBS still running?") from None
            raise
        if response.get("requestType") != request:
            self._drop()  # a late reply to an earlier request: this connection is out of step
            raise ObsConnectionError(f"OBS at {self.target.address} sent a reply to "
                                     f"{response.get('requestType')!r} for {request}; reconnecting")
        status = response.get("requestStatus", {})
        if not status.get("result", False):
            code = int(status.get("code", 0))
            comment = status.get("comment")
            raise ObsRequestError(f"OBS refused {request} (code {code}{': ' + comment if comment else ''})",
                                  request=request, code=code, comment=comment)
        return response.get("responseData") or {}

    # -- conveniences ----------------------------------------------------------------------------------
    def screenshot(self, source: str, *, width: int | None = None, height: int | None = None,
                   fmt: str = "jpg", quality: int = 85, timeout: float | None = None) -> bytes:
        """The encoded image (JPEG by default) of ``source`` as OBS renders it now.  Give only one of
        ``width`` / ``height`` to keep the aspect ratio (with both, OBS stretches)."""
        data: dict[str, Any] = {"sourceName": source, "imageFormat": fmt, "imageCompressionQuality": quality}
        if width is not None:
            data["imageWidth"] = int(width)
        if height is not None:
            data["imageHeight"] = int(height)
        out = self.call("GetSourceScreenshot", data, timeout=timeout)
        uri = out.get("imageData", "")
        _, _, b64 = uri.partition("base64,")
        if not b64:
            raise ObsError(f"OBS returned no image for source {source!r}")
        return base64.b64decode(b64)

    def scenes(self) -> list[str]:
        """Scene names in OBS's order (top first)."""
        return [s["sceneName"] for s in reversed(self.call("GetSceneList").get("scenes", []))]

    def current_scene(self) -> str:
        out = self.call("GetCurrentProgramScene")
        return out.get("currentProgramSceneName") or out.get("sceneName")

    def inputs(self) -> list[dict[str, Any]]:
        """Every input: ``inputName``, ``inputKind``, ``unversionedInputKind``."""
        return list(self.call("GetInputList").get("inputs", []))

    def scene_items(self, scene: str) -> list[dict[str, Any]]:
        return list(self.call("GetSceneItemList", {"sceneName": scene}).get("sceneItems", []))

    def source_names(self) -> list[str]:
        """Every name ``obs:NAME`` can capture: scenes first, then inputs."""
        names = self.scenes()
        names += [i["inputName"] for i in self.inputs() if i["inputName"] not in names]
        return names


def _open(target: ObsTarget, timeout: float):
    """A connected, identified obsws_python ReqClient, or a clear error."""
    from obsws_python import ReqClient
    from obsws_python.error import OBSSDKError
    from websocket import WebSocketException

    hint = f"OBS not reachable at {target.address} — {_SETTINGS_HINT}"
    try:
        # host, port and password always explicit: obsws-python then never reads a config.toml.
        return ReqClient(host=target.host, port=target.port, password=target.password, timeout=timeout)
    except OBSSDKError as err:
        text = str(err)
        if "no password" in text:
            raise ObsAuthError(f"OBS at {target.address} requires a password: set {PASSWORD_ENV} (or run in a "
                               "terminal to be asked); it is under Tools → WebSocket Server Settings → Show "
                               "Connect Info") from None
        raise ObsAuthError(f"OBS at {target.address} rejected the connection ({text}); the password is probably "
                           f"wrong: check {PASSWORD_ENV} against Tools → WebSocket Server Settings → Show "
                           "Connect Info") from None
    except (WebSocketException, ConnectionError) as err:
        # OBS closes the socket (code 4009) when the password is wrong.
        if ("4009" in str(err) or "Authentication" in str(err)) and _is_listening(target, timeout):
            raise ObsAuthError(f"OBS at {target.address} rejected the password (check {PASSWORD_ENV} "
                               "against Tools → WebSocket Server Settings → Show Connect Info)") from None
        raise ObsConnectionError(f"{hint} ({type(err).__name__}: {err})") from None
    except (OSError, TimeoutError, ValueError) as err:
        raise ObsConnectionError(f"{hint} ({type(err).__name__}: {err})") from None


def _is_listening(target: ObsTarget, timeout: float) -> bool:
    import socket

    try:
        with socket.create_connection((target.host, target.port), timeout=timeout):
            return True
    except OSError:
        return False


__all__ = ["NOT_FOUND", "PASSWORD_ENV", "REQUEST_FAILED", "ObsAuthError", "ObsClient", "ObsConnectionError", "ObsError",
           "ObsRequestError", "ObsTarget", "ObsTimeoutError"]
