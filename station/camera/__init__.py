"""Cameras: one adapter interface (base.Camera); simulated, replay and GenICam implementations."""

from __future__ import annotations

from station.alarms import AlarmBoard
from station.camera.base import Camera, CameraError
from station.config import GenicamCameraConfig, ReplayCameraConfig, SimulatedCameraConfig


def make_camera(config, alarms: AlarmBoard) -> Camera:
    """The adapter for a camera config (not opened yet)."""
    if isinstance(config, SimulatedCameraConfig):
        from station.camera.simulated import SimulatedCamera

        return SimulatedCamera(config)
    if isinstance(config, ReplayCameraConfig):
        from station.camera.replay import ReplayCamera

        return ReplayCamera(config)
    if isinstance(config, GenicamCameraConfig):
        from station.camera.genicam import GenicamCamera  # harvesters is imported only here

        return GenicamCamera(config, alarms)
    raise TypeError(f"unknown camera config {type(config).__name__}")


__all__ = ["Camera", "CameraError", "make_camera"]
