"""balvit: label-efficient LiDAR semantic segmentation with frozen 2D vision foundation models.

`balvit.load(checkpoint, device=...)` (balvit/api.py) rebuilds a trained model from its checkpoint and
predicts on point arrays. It is imported on first use, so that `import balvit.errors` (or the CLI's
start-up) does not import torch.
"""

__version__ = "0.1.0"

_LAZY = {"load": "api", "Segmenter": "api"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'balvit' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])
