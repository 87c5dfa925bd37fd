"""The camera adapter interface every camera implements (simulated, replay, GenICam).

A camera is opened once, then asked for one frame per triggered part with ``grab``. The
frame returned belongs to that trigger: never a stale frame from an earlier one.
Images are uint8 HxW (mono) or HxWx3 RGB; wider bit depths are scaled to 8 bits by the
adapter (the layout is documented in station/camera/pixels.py where it applies).
"""

from __future__ import annotations

import abc

from station.inspection import View


class CameraError(Exception):
    """The camera could not deliver a frame (vanished, timed out, refused). Names the camera."""


class Camera(abc.ABC):
    name: str

    @abc.abstractmethod
    def open(self) -> None:
        """Connect and configure. Raises CameraError with the reason."""

    @abc.abstractmethod
    def grab(self, part_id: int, timeout_s: float) -> View:
        """Trigger (when in software-trigger mode) and return the frame for this part.

        Raises CameraError on timeout or loss; the caller rejects the part as camera_error.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device. Safe to call twice."""

    def configure(self, recipe_camera) -> object:
        """Apply a recipe's settings for this view (station.recipe.RecipeCamera: features,
        trigger mode) when the recipe is loaded. Must not raise; cameras without settings
        ignore it."""
        return None

    @property
    def connected(self) -> bool:
        return True

    def sample_view(self) -> View | None:
        """A representative frame taken without a trigger (no part consumed), to warm the models
        up and measure the recipe at start; None where the camera cannot give one (hardware)."""
        return None

    def describe(self) -> dict:
        """Short facts for the HMI and `station doctor` (vendor, model, serial...)."""
        return {"name": self.name, "type": type(self).__name__}

    def __enter__(self) -> "Camera":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
