"""Line-side visual inspection station: core runtime."""

__version__ = "0.1.0"
