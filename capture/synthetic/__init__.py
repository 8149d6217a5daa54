"""The synthetic arcade world: a seeded 2D game that yields frames, their sound and ground truth.

``World(seed).step()`` gives one 30-fps frame, the 1600 stereo samples that belong to it and the
events that became visible on it; :func:`render_clip` plays a whole clip; the ``synthetic[:SEED]``
capture source (:class:`SyntheticSource`) streams it like any other frame source.
"""

from capture.synthetic.source import SyntheticSource, open_synthetic
from capture.synthetic.world import SyntheticEvent, World, render_clip, world_audio

__all__ = ["SyntheticEvent", "SyntheticSource", "World", "open_synthetic", "render_clip", "world_audio"]
