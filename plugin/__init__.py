"""What a user touches: the ``livefoley`` CLI, the live engine and the OBS integration."""
