"""Synthetic LiDAR + camera street world that writes SemanticKITTI and nuScenes-lidarseg datasets.

`generate(fmt, out, ...)` simulates procedural street scenes (world.py), an HDL-64E / HDL-32E-like
LiDAR by vectorised ray casting (lidar.py) and pinhole cameras with per-pixel class masks (camera.py),
and writes them in the official on-disk layouts (writers.py).
"""

from .generate import generate

__all__ = ["generate"]
