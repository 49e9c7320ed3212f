"""balvit: label-efficient LiDAR semantic segmentation with frozen 2D vision foundation models."""

__version__ = "0.1.0"
