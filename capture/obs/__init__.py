"""OBS Studio below the application: the obs-websocket 5 client (:mod:`capture.obs.client`) and the
``obs:NAME`` frame source built on it (:mod:`capture.obs.source`).  Which OBS to talk to — settings,
environment, password prompt — is the application's business (:mod:`plugin.obs.target`)."""

from capture.obs.source import ObsSource, from_spec

__all__ = ["ObsSource", "from_spec"]
