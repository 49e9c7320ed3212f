"""Segment Anything (Kirillov et al., "Segment Anything", ICCV 2023) through `transformers`' SamModel.

The one place that builds a SamModel and runs it on prompts, used by the ELiTe teacher's SAM image
encoder (models/elite.py) and by both camera pseudo-labellers (data/pseudo_labels: MultiViT's box
prompts and ELiTe's SAM-PLG point + mask prompts). Facts used from the paper / its public model
card: the image is resized so that its longer side is the encoder's input size (1024 for the
released models), normalised with the ImageNet statistics and zero-padded bottom / right to a
square; the mask decoder returns low-resolution mask logits (mask = logits > 0) and a predicted IoU
per mask, three masks per prompt when asked for several granularities.

No SAM weights exist on the reference machine: `build_sam("random", "tiny")` makes a SAM of a few
thousand parameters for tests and smoke runs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from .vit import IMAGENET_MEAN, IMAGENET_STD



def tiny_sam_config():
    """A SAM of a few thousand parameters (64 x 64 input, patch 8) for tests and smoke runs."""
    from transformers import SamConfig

    vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, image_size=64,
                  patch_size=8, window_size=4, global_attn_indexes=[1], output_channels=16, num_pos_feats=8)
    prompt = dict(hidden_size=16, image_size=64, image_embedding_size=8, mask_input_channels=4)
    decoder = dict(hidden_size=16, num_attention_heads=2, mlp_dim=32, iou_head_hidden_dim=16)
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def build_sam(weights: str, arch: str = "vit_b"):
    """A transformers SamModel (eval mode) from `weights`: hf:<id> (local Hugging Face cache only),
    a local directory in Hugging Face format, or `random` (seeded, untrained: `arch` vit_b or tiny)."""
    from transformers import SamConfig, SamModel

    if weights == "random":
        if arch != "tiny":
            warnings.warn("SAM is UNTRAINED (sam_weights=random): its masks and features are meaningless "
                          "for anything but tests", UserWarning, stacklevel=2)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = SamModel(tiny_sam_config() if arch == "tiny" else SamConfig())
        return model.eval()
    if weights.startswith("hf:"):
        from .weights import local_hf_snapshot

        directory = local_hf_snapshot(weights, "SAM weights", "point the setting at a local directory, or do "
                                      "without SAM (teacher: model.elite_teacher.encoder=dinov2; pseudo-labels: a "
                                      "stand-in predictor)")
    else:
        directory = Path(weights).expanduser()
        if not directory.is_dir():
            raise ConfigError(f"SAM weights {weights!r}: no such SAM model directory (expected hf:<id>, random "
                              "or an existing directory)")
    try:
        return SamModel.from_pretrained(str(directory)).eval()
    except Exception as err:
        raise DataError(f"{directory}: cannot load a SAM model ({type(err).__name__}: {err})") from None


class SamPrompter:
    """A SamModel on one image at a time: `set_image` computes the image embedding once, `decode`
    turns batches of prompts (points, boxes, mask logits; all in image pixel coordinates, x = column)
    into mask logits at the image's resolution and SAM's predicted IoU of each mask."""

    def __init__(self, model, device: str | torch.device = "cpu"):
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.size = int(model.config.vision_config.image_size)
        self.mask_in = 4 * int(model.config.prompt_encoder_config.image_embedding_size)  # mask prompt side
        self.mean = (torch.tensor(IMAGENET_MEAN) * 255).view(1, 3, 1, 1).to(self.device)
        self.std = (torch.tensor(IMAGENET_STD) * 255).view(1, 3, 1, 1).to(self.device)
        self.name = f"sam-{model.config.vision_config.hidden_size}"

    def _pad(self, x: torch.Tensor, value: float = 0.0) -> torch.Tensor:
        return F.pad(x, (0, self.size - self.resized[1], 0, self.size - self.resized[0]), value=value)

    @torch.no_grad()
    def set_image(self, image: np.ndarray) -> None:
        """(H, W, 3) uint8 RGB -> the image embedding (1, C, e, e), kept for `decode`."""
        h, w = image.shape[:2]
        self.shape = (h, w)
        self.scale = self.size / max(h, w)
        self.resized = (max(1, int(h * self.scale + 0.5)), max(1, int(w * self.scale + 0.5)))
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=self.resized, mode="bilinear", align_corners=False, antialias=True)
        self.embedding = self.model.get_image_embeddings(self._pad((x - self.mean) / self.std))

    @torch.no_grad()
    def decode(self, points: np.ndarray | None = None, labels: np.ndarray | None = None,
               boxes: np.ndarray | None = None, masks: np.ndarray | None = None,
               multimask: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """P prompts: points (P, K, 2) with labels (P, K) (1 positive, 0 negative, -10 padding),
        boxes (P, 4) x0 y0 x1 y1, masks (P, H, W) prompt logits -> mask logits (P, M, H, W) float32
        and predicted IoU (P, M); M = 3 with `multimask`, else 1."""
        p = len(next(v for v in (points, boxes, masks) if v is not None))
        kw = {}
        if points is not None:
            kw["input_points"] = torch.as_tensor(points, dtype=torch.float32, device=self.device)[:, None] * self.scale
            kw["input_labels"] = torch.as_tensor(labels, dtype=torch.long, device=self.device)[:, None]
        if boxes is not None:
            kw["input_boxes"] = torch.as_tensor(boxes, dtype=torch.float32, device=self.device)[:, None] * self.scale
        if masks is not None:
            m = torch.as_tensor(masks, dtype=torch.float32, device=self.device)[:, None]
            m = F.interpolate(m, size=self.resized, mode="bilinear", align_corners=False)
            m = self._pad(m, float(m.min()))
            kw["input_masks"] = F.interpolate(m, size=(self.mask_in, self.mask_in), mode="bilinear",
                                              align_corners=False)
        out = self.model(image_embeddings=self.embedding.expand(p, -1, -1, -1), multimask_output=multimask, **kw)
        low = out.pred_masks[:, 0].float()  # (P, M, l, l) over the padded square
        up = F.interpolate(low, size=(self.size, self.size), mode="bilinear", align_corners=False)
        up = F.interpolate(up[..., :self.resized[0], :self.resized[1]], size=self.shape, mode="bilinear",
                           align_corners=False)
        return up.cpu().numpy(), out.iou_scores[:, 0].float().cpu().numpy()
