"""Cameras: one adapter interface (base.Camera); simulated, replay and GenICam implementations."""
