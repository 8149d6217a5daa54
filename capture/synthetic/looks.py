"""Other looks of the world's pictures: the same game, drawn differently.

The shipped model learned from the world's own drawing only; these transforms ask whether its sound
follows *events* rather than the world's exact pixels.  Each keeps every event's frame; ``mirror``
also moves every event to the other side (its ground truth is mirrored with it: channels swapped,
``x → 1 − x``), so the pan must follow the picture, not the world's habits.

    livefoley eval --model default --seeds 100-104 --look invert
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["CLIP_LOOKS", "LOOKS", "apply_look", "mirror_truth"]

LOOKS = {
    "world": "the world as it is drawn (the training look)",
    "mirror": "left and right swapped (sounds must swap sides with the picture)",
    "invert": "negative colours: dark objects on light backgrounds",
    "hue": "every hue turned by 120°",
    "gray": "no colour at all",
    "small": "the picture at 55 % of its size, on a flat grey border",
}
CLIP_LOOKS = tuple(k for k in LOOKS if k != "mirror")
"""The looks a clip can be drawn in (``synth --looks``): ``mirror`` is training's business — it
mirrors the sound with the picture, which a clip of the world's own sound cannot."""


def apply_look(frame: np.ndarray, look: str) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` → the same frame in ``look`` (same shape)."""
    if look == "world":
        return frame
    if look == "mirror":
        return np.ascontiguousarray(frame[:, ::-1])
    if look == "invert":
        return 255 - frame
    if look == "hue":
        hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + 60) % 180  # OpenCV hue is 0–179: +60 = 120°
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if look == "gray":
        return np.repeat(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    if look == "small":
        h, w = frame.shape[:2]
        sh, sw = max(1, round(h * 0.55)), max(1, round(w * 0.55))
        out = np.full_like(frame, 128)
        y0, x0 = (h - sh) // 2, (w - sw) // 2
        out[y0 : y0 + sh, x0 : x0 + sw] = cv2.resize(frame, (sw, sh), interpolation=cv2.INTER_AREA)
        return out
    raise ValueError(f"unknown look {look!r}; valid: {', '.join(LOOKS)}")


def mirror_truth(audio: np.ndarray, events: list[dict]) -> tuple[np.ndarray, list[dict]]:
    """The ground truth of a mirrored picture: channels swapped and every event's ``x`` → ``1 − x``."""
    return np.ascontiguousarray(audio[::-1]), [{**ev, "x": 1.0 - ev["x"]} if "x" in ev else ev for ev in events]
