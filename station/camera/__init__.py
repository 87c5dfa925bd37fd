"""Cameras: one adapter interface (base.Camera); simulated, replay and GenICam implementations."""

from __future__ import annotations

from station.alarms import AlarmBoard
from station.camera.base import Camera, CameraError
from station.images import DEFAULT_MAX_PIXELS
from station.config import GenicamCameraConfig, ReplayCameraConfig, SimulatedCameraConfig


def make_camera(config, alarms: AlarmBoard, max_pixels: int = DEFAULT_MAX_PIXELS) -> Camera:
    """The adapter for a camera config (not opened yet). ``max_pixels``: images announcing more
    are refused before they are decoded (ImageError)."""
    if isinstance(config, SimulatedCameraConfig):
        from station.camera.simulated import SimulatedCamera

        return SimulatedCamera(config)
    if isinstance(config, ReplayCameraConfig):
        from station.camera.replay import ReplayCamera

        return ReplayCamera(config, max_pixels)
    if isinstance(config, GenicamCameraConfig):
        from station.camera.genicam import GenicamCamera  # harvesters is imported only here

        return GenicamCamera(config, alarms, max_pixels=max_pixels)
    raise TypeError(f"unknown camera config {type(config).__name__}")


__all__ = ["Camera", "CameraError", "make_camera"]
