"""The OBS Studio integration: which OBS to talk to (:mod:`plugin.obs.target`; the websocket client
itself is below, in :mod:`capture.obs.client`), the
setup of audio capture and delay compensation inside OBS (:mod:`plugin.obs.setup`), persisted
settings shared by the CLI and the OBS script (:mod:`plugin.obs.settings`), and the OBS script
itself (``plugin/obs/livefoley_obs.py``, loaded via Tools → Scripts) with its process control
(:mod:`plugin.obs.process`).  The ``obs:NAME`` frame source lives in :mod:`capture.obs.source`."""
