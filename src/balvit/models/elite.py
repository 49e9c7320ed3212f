"""ELiTe: a PEFT-tuned image foundation teacher and a lightweight range-view LiDAR student.

Implements the two networks of "ELiTe: Efficient Image-to-LiDAR Knowledge Transfer for Semantic
Segmentation" (Zhibo Zhang, Ximing Yang, Weizhong Zhang, Cheng Jin; ICME 2024, arXiv:2405.04121)
from the paper's description; the training objectives are in tasks/elite.py and the SAM-based
pseudo-labels in data/pseudo_labels/samplg.py. Facts used: a vision foundation model (the SAM image encoder)
as teacher, tuned parameter-efficiently with AdaLoRA (Zhang et al., ICLR 2023) or LoRA (Hu et al.,
ICLR 2022), multi-scale per-pixel predictions of the teacher distilled into every stage of a student
of about 1.9 M parameters that runs at 24 Hz; the official code builds on 2DPASS (Yan et al., ECCV
2022), whose student is a sparse-convolution network. Ours is pure PyTorch (spconv's CPU build cannot
back-propagate), a small range-view encoder-decoder with one classifier per stage:

    student:  range image (6, H, W) -> residual stages at strides 1, 2, 4, 8 (channels[i]) ->
              top-down decoder d_i = lateral(e_i) + up(d_{i+1}) (width D) ->
              per point: stage logits_i = conv1x1_i(d_i)[row >> i, col >> i]          (training only)
                         logits = MLP([d_0, ..., d_{S-1}] at the point, PointMLP(x, y, z, i, r))

    teacher:  image (3, h, w) -> resize to image_size -> foundation ViT (frozen base weights +
              LoRA/AdaLoRA adapters on the attention projections) -> token maps after L blocks ->
              up-sampling decoder: y_l = conv3x3(lateral_l(map_l) up x2^l + up(y_{l-1}))
              -> per-pixel logits at strides p, p/2, ..., p/2^(L-1) (one head per stage)

Only the adapters and the teacher's heads train; checkpoints hold those plus the identity (name,
weights, sha256) of the frozen encoder, never its weights. Inference with `balvit eval / predict`
uses the student alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import not_architecture
from ..errors import ConfigError
from .base import SegModel
from .layers import ConvBNAct, PointMLP
from .ops import gather_grid
from .sam import build_sam
from .vit import normalise_images

log = logging.getLogger(__name__)


@dataclass
class ELiTeStudentConfig:
    """Config section `model.elite_student`: the lightweight range-view LiDAR student (about 2 M parameters)."""

    sections: ClassVar[tuple[str, ...]] = ("elite_student",)
    data_fields: ClassVar[tuple[str, ...]] = ("dataset", "intensity_scale", "range")

    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])  # encoder stages, strides 1, 2, 4, 8
    blocks: list[int] = field(default_factory=lambda: [1, 2, 3, 1])  # residual blocks per stage
    decoder_channels: int = 64  # width of the top-down decoder (one classifier head per stage)
    point_channels: int = 32  # per-point MLP on xyz, intensity, range
    head_hidden: int = 64  # hidden width of the final point classifier

    def check(self, cfg) -> None:
        if len(self.channels) < 2 or len(self.channels) != len(self.blocks) or min(self.channels + self.blocks) <= 0:
            raise ConfigError("model.elite_student.channels and .blocks need one positive value per stage (>= 2 stages)")


@dataclass
class ELiTeTeacherConfig:
    """Config section `model.elite_teacher`: the PEFT-tuned image foundation teacher."""

    sections: ClassVar[tuple[str, ...]] = ("backbone", "elite_teacher")
    data_fields: ClassVar[tuple[str, ...]] = ("dataset",)

    # sam: the SAM image encoder (transformers SamModel, `sam_weights`); dinov2: the backbone of
    # `model.backbone` (name, weights)
    encoder: Literal["sam", "dinov2"] = "dinov2"
    # hf:<id> (local cache) | a directory | random (checked through the encoder's identity)
    sam_weights: str = not_architecture("hf:facebook/sam-vit-base")
    sam_arch: Literal["vit_b", "tiny"] = "vit_b"  # architecture built for sam_weights=random
    image_size: list[int] = field(default_factory=lambda: [364, 1232])  # (rows, cols) fed to the encoder
    peft: Literal["adalora", "lora", "none"] = "adalora"  # none: encoder fully frozen, only heads train
    target_modules: list[str] = field(default_factory=list)  # empty: q_proj, v_proj (DINOv2) / qkv (SAM)
    lora_rank: int = 8  # LoRA rank; AdaLoRA's average target rank
    lora_alpha: float = 16.0
    lora_dropout: float = not_architecture(0.0)
    adalora_init_rank: int = 12  # AdaLoRA starts every matrix at this rank and prunes to lora_rank
    adalora_tinit: float = not_architecture(0.1)  # fraction of train.steps before rank pruning starts
    adalora_tfinal: float = not_architecture(0.3)  # fraction of train.steps at the end with fixed ranks
    adalora_delta_t: int = not_architecture(10)  # steps between rank re-allocations
    orth_reg_weight: float = not_architecture(0.1)  # AdaLoRA orthogonality regulariser on P and Q
    feature_layers: list[int] = field(default_factory=list)  # blocks feeding the heads (1-based; empty: even)
    decoder_channels: list[int] = field(default_factory=lambda: [128, 64, 32])  # one per x2 up-sampling stage

    def check(self, cfg) -> None:
        if len(self.image_size) != 2 or min(self.image_size) <= 0:
            raise ConfigError(f"model.elite_teacher.image_size must be [rows, cols], got {self.image_size}")
        if not self.decoder_channels or min(self.decoder_channels) <= 0:
            raise ConfigError("model.elite_teacher.decoder_channels needs at least one positive width")
        if self.feature_layers and len(self.feature_layers) != len(self.decoder_channels):
            raise ConfigError("model.elite_teacher.feature_layers needs one block per decoder stage "
                              f"({len(self.decoder_channels)}), got {self.feature_layers}")
        if not 0 <= self.adalora_tinit < 1 or not 0 <= self.adalora_tfinal < 1 or self.adalora_tinit + self.adalora_tfinal >= 1:
            raise ConfigError("model.elite_teacher.adalora_tinit / adalora_tfinal are fractions of train.steps "
                              "with tinit + tfinal < 1")
        if self.peft != "none" and (self.lora_rank <= 0 or self.adalora_init_rank < self.lora_rank):
            raise ConfigError("model.elite_teacher needs lora_rank > 0 and adalora_init_rank >= lora_rank")


# ==================================================================================== student


class ResBlock(nn.Module):
    """(B, cin, H, W) -> (B, cout, ceil(H/s), ceil(W/s)): 3x3 (stride s) -> 3x3, plus a shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = ConvBNAct(cin, cout, 3, stride)
        self.conv2 = ConvBNAct(cout, cout, 3, act=False)
        self.short = nn.Identity() if cin == cout and stride == 1 else ConvBNAct(cin, cout, 1, stride, act=False)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.short(x) + self.conv2(self.conv1(x)))


class ELiTeStudent(SegModel):
    """The real-time LiDAR student: range-view residual stages, top-down decoder, stage heads.

    The final classifier is an MLP on [d_0, ..., d_{S-1}, point feature] of each point; its first
    (linear) layer is applied per stage as a 1x1 convolution *before* the per-point gather, which is
    the same function but cheaper on the coarse maps (fewer pixels than points).
    """

    def __init__(self, num_classes: int, channels: list[int], blocks: list[int], decoder_channels: int = 64,
                 point_channels: int = 32, head_hidden: int = 64, in_channels: int = 6):
        super().__init__()
        self.num_classes = num_classes
        self.num_stages = len(channels)
        stages, cin = [], in_channels
        for i, (c, n) in enumerate(zip(channels, blocks)):
            layers = [ResBlock(cin, c, 1 if i == 0 else 2)] + [ResBlock(c, c) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            cin = c
        self.stages = nn.ModuleList(stages)
        d = decoder_channels
        self.lateral = nn.ModuleList([ConvBNAct(c, d, 1) for c in channels])
        # 3x3 smoothing after each merge except at full resolution (the costliest map)
        self.smooth = nn.ModuleList([ConvBNAct(d, d, 3) for _ in channels[1:-1]])
        self.stage_heads = nn.ModuleList([nn.Conv2d(d, num_classes, 1) for _ in channels])  # per-stage classifiers
        self.point_mlp = PointMLP(5, [point_channels])
        self.head_maps = nn.ModuleList([nn.Conv2d(d, head_hidden, 1, bias=False) for _ in channels])
        self.head_point = nn.Linear(point_channels, head_hidden, bias=False)
        self.head_norm = nn.BatchNorm1d(head_hidden)
        self.head_out = nn.Linear(head_hidden, num_classes)

    @classmethod
    def from_config(cls, cfg, num_classes: int) -> "ELiTeStudent":
        s = cfg.model.elite_student
        return cls(num_classes, list(s.channels), list(s.blocks), s.decoder_channels, s.point_channels, s.head_hidden)

    def decoder_maps(self, rv: torch.Tensor) -> list[torch.Tensor]:
        """(B, 6, H, W) -> decoder maps d_i (B, D, H/2^i, W/2^i), i = 0 .. S-1."""
        x, feats = rv, []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        dec: list[torch.Tensor] = [self.lateral[-1](feats[-1])]
        for i in range(self.num_stages - 2, -1, -1):
            y = self.lateral[i](feats[i])
            y = y + F.interpolate(dec[0], size=y.shape[-2:], mode="bilinear", align_corners=False)
            if i > 0:
                y = self.smooth[i - 1](y)
            dec.insert(0, y)
        return dec

    @staticmethod
    def _point_cells(batch: dict, i: int, shape) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = shape[-2:]
        rc = batch["rv_rc"]
        return torch.clamp(rc[:, 0] >> i, max=h - 1), torch.clamp(rc[:, 1] >> i, max=w - 1)

    def forward(self, batch: dict) -> dict:
        """logits (N, C) = MLP([d_i at the point's pixel for every stage i], PointMLP(x, y, z,
        intensity, range)); in training also aux = {"stage<i>": (N, C)} from every stage's classifier."""
        dec = self.decoder_maps(batch["rv"])
        b = batch["batch"]
        pts = batch["points"]
        pf = self.point_mlp(torch.cat([pts[:, :4], pts[:, :3].norm(dim=1, keepdim=True)], dim=1))
        hidden = self.head_point(pf)
        stage_logits = {}
        for i, d in enumerate(dec):
            row, col = self._point_cells(batch, i, d.shape)
            hidden = hidden + gather_grid(self.head_maps[i](d), b, row, col)
            if self.training:
                stage_logits[f"stage{i + 1}"] = gather_grid(self.stage_heads[i](d), b, row, col)
        out = {"logits": self.head_out(F.relu(self.head_norm(hidden)))}
        if self.training:
            out["aux"] = stage_logits
        return out


# ==================================================================================== teacher


def state_sha256(state: dict) -> str:
    from .vit import _state_sha256

    return _state_sha256(state)


class SamImageEncoder(nn.Module):
    """The SAM ViT image encoder at any input size: its absolute position embedding (pretrained on a
    64 x 64 token grid for 1024 x 1024 inputs) is resized bicubically to the token grid, windowed
    blocks pad to their window, global blocks interpolate their relative positions (as SAM does)."""

    default_targets = ("qkv",)

    def __init__(self, sam_vision_encoder: nn.Module, identity: dict):
        super().__init__()
        self.core = sam_vision_encoder
        self.patch_size = int(self.core.config.patch_size)
        self.width = int(self.core.config.hidden_size)
        self.depth = len(self.core.layers)
        self._identity = identity
        for p in self.core.parameters():
            p.requires_grad_(False)

    def identity(self) -> dict:
        return dict(self._identity)

    def features(self, pixels: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """(B, 3, H, W) normalised -> [(B, D, H/p, W/p)] after each block in `layers` (1-based)."""
        x = self.core.patch_embed.projection(pixels).permute(0, 2, 3, 1)  # (B, h, w, D)
        pos = self.core.pos_embed
        if pos is not None:
            if pos.shape[1:3] != x.shape[1:3]:
                pos = F.interpolate(pos.permute(0, 3, 1, 2), size=x.shape[1:3], mode="bicubic",
                                    align_corners=False).permute(0, 2, 3, 1)
            x = x + pos
        out = []
        for i, layer in enumerate(self.core.layers, start=1):
            x = layer(x)
            if isinstance(x, tuple):
                x = x[0]
            if i in layers:
                out.append(x.permute(0, 3, 1, 2))
        return out


class DinoImageEncoder(nn.Module):
    """A DINOv2 / DINOv3 `FoundationViT` (models/vit.py) returning patch-token maps."""

    default_targets = ("q_proj", "v_proj")

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit
        self.patch_size = vit.patch_size
        self.width = vit.width
        self.depth = vit.depth
        self._identity = vit.identity()  # taken before adapters change the module's state

    @property
    def core(self) -> nn.Module:
        """The transformers model inside the FoundationViT (where the adapters go)."""
        return self.vit.model

    def identity(self) -> dict:
        return dict(self._identity)

    def features(self, pixels: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        x, (h, w) = self.vit.embed_image(pixels)
        out, start = [], 0
        for end in layers:
            x = self.vit.run_blocks(x, start, end, (h, w))
            start = end
            y = self.vit.final_norm(x) if end == self.depth else x
            tokens = y[:, self.vit.num_prefix:]
            out.append(tokens.transpose(1, 2).reshape(x.shape[0], self.width, h, w))
        return out


def _is_adapter_key(key: str) -> bool:
    return "lora_" in key or ".ranknum" in key


class ELiTeTeacher(SegModel):
    """Foundation image encoder + LoRA/AdaLoRA adapters + multi-scale up-sampling heads.

    forward_images: (B, 3, h, w) uint8 -> [(B, C, H_l, W_l)] per-pixel logits of every head
    (coarse to fine); forward(batch): per-point logits read at the points' camera pixels.
    """

    frozen_modules = ("encoder",)

    def __init__(self, num_classes: int, encoder: nn.Module, cfg, total_steps: int = 1000):
        super().__init__()
        self.num_classes = num_classes
        self.image_size = tuple(int(v) for v in cfg.image_size)
        p = encoder.patch_size
        if self.image_size[0] % p or self.image_size[1] % p:
            raise ConfigError(f"model.elite_teacher.image_size {list(self.image_size)} must be a multiple of the "
                              f"encoder's patch size {p}")
        self.encoder = encoder
        self.peft_kind = cfg.peft
        self.orth_reg_weight = cfg.orth_reg_weight
        object.__setattr__(self, "_adalora", None)  # the AdaLoRA tuner stays outside the module tree
        self._apply_peft(cfg, total_steps)
        self._frozen_keys = {f"encoder.{k}" for k in encoder.state_dict() if not _is_adapter_key(k)}

        n = len(cfg.decoder_channels)
        layers = list(cfg.feature_layers) or [round(encoder.depth * (i + 1) / n) for i in range(n)]
        if sorted(set(layers)) != layers or layers[0] < 1 or layers[-1] > encoder.depth:
            raise ConfigError(f"model.elite_teacher.feature_layers must increase within 1..{encoder.depth}, got {layers}")
        self.feature_layers = layers
        chans = list(cfg.decoder_channels)
        self.lateral = nn.ModuleList([ConvBNAct(encoder.width, c, 1) for c in chans])
        self.fuse = nn.ModuleList([ConvBNAct(chans[i - 1], c, 1) for i, c in enumerate(chans) if i > 0])
        self.smooth = nn.ModuleList([ConvBNAct(c, c, 3) for c in chans])
        self.heads = nn.ModuleList([nn.Conv2d(c, num_classes, 1) for c in chans])
        self._trainable_names = {n for n, p in self.named_parameters() if p.requires_grad}

    def set_trainable(self, flag: bool) -> None:
        """Adapters and heads require grad (flag) or not; the encoder's base weights never do."""
        for n, p in self.named_parameters():
            p.requires_grad_(flag and n in self._trainable_names)

    # ---------------------------------------------------------------------------- building

    @classmethod
    def from_config(cls, cfg, num_classes: int) -> "ELiTeTeacher":
        t = cfg.model.elite_teacher
        if t.encoder == "sam":
            sam = build_sam(t.sam_weights, t.sam_arch)
            vision = sam.vision_encoder
            name = "sam_tiny" if t.sam_weights == "random" and t.sam_arch == "tiny" else "sam_vit"
            identity = {"name": name, "weights": t.sam_weights, "sha256": state_sha256(vision.state_dict())}
            encoder: nn.Module = SamImageEncoder(vision, identity)
        else:
            from .weights import load_vit

            encoder = DinoImageEncoder(load_vit(cfg.model.backbone))
        return cls(num_classes, encoder, t, total_steps=cfg.train.steps)

    def _apply_peft(self, cfg, total_steps: int) -> None:
        if cfg.peft == "none":
            return
        from peft import AdaLoraConfig, LoraConfig
        from peft.tuners.adalora import AdaLoraModel
        from peft.tuners.lora import LoraModel

        targets = list(cfg.target_modules) or list(self.encoder.default_targets)
        try:
            if cfg.peft == "lora":
                LoraModel(self.encoder.core, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                                                        lora_dropout=cfg.lora_dropout, target_modules=targets),
                          "default")
            else:
                steps = max(int(total_steps), 2)
                tinit, tfinal = int(cfg.adalora_tinit * steps), int(cfg.adalora_tfinal * steps)
                config = AdaLoraConfig(init_r=cfg.adalora_init_rank, target_r=cfg.lora_rank, tinit=tinit, tfinal=tfinal,
                                       deltaT=cfg.adalora_delta_t, total_step=steps, lora_alpha=cfg.lora_alpha,
                                       lora_dropout=cfg.lora_dropout, target_modules=targets,
                                       orth_reg_weight=cfg.orth_reg_weight)
                # the tuner wraps the encoder in place; keep it outside the module tree (state names stay)
                object.__setattr__(self, "_adalora", AdaLoraModel(self.encoder.core, config, "default"))
        except ValueError as err:
            raise ConfigError(f"model.elite_teacher: cannot add {cfg.peft} adapters to {targets}: {err}") from None
        adapters = [n for n, p in self.encoder.named_parameters() if p.requires_grad]
        if not adapters:
            raise ConfigError(f"model.elite_teacher.target_modules {targets} matched no layer of the encoder")

    # ---------------------------------------------------------------------------- state

    def trainable_state_dict(self) -> dict:
        """Adapters, heads and their buffers: everything but the encoder's base weights."""
        return {k: v for k, v in self.state_dict().items() if k not in self._frozen_keys}

    def frozen_identities(self) -> dict:
        return {"encoder": self.encoder.identity()}

    def adapter_parameters(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.named_parameters() if n.startswith("encoder.") and p.requires_grad}

    def orth_regularization(self) -> torch.Tensor:
        """AdaLoRA's R(P, Q) = mean over adapters of ||P P^T - I||_F and ||Q^T Q - I||_F (0 without AdaLoRA)."""
        terms = []
        if self._adalora is not None:
            for name, p in self.encoder.named_parameters():
                if "lora_A" in name:
                    terms.append(torch.linalg.norm(p @ p.T - torch.eye(p.shape[0], device=p.device)))
                elif "lora_B" in name:
                    terms.append(torch.linalg.norm(p.T @ p - torch.eye(p.shape[1], device=p.device)))
        if not terms:
            return self.heads[0].weight.new_zeros(())
        return torch.stack(terms).mean()

    def after_step(self, step: int) -> None:
        """AdaLoRA's importance-based rank allocation (after the optimizer step, before zero_grad)."""
        if self._adalora is None or not self.training:
            return
        config = self._adalora.peft_config["default"]
        if step > config.total_step - config.tfinal and not config.rank_pattern:
            # resumed (or loaded) after the budget was fixed: the pattern is the non-pruned singular values
            config.rank_pattern = {n: (p.detach().reshape(-1) != 0).tolist()
                                   for n, p in self.encoder.core.named_parameters() if "lora_E." in n}
        self._adalora.update_and_allocate(step)

    # ---------------------------------------------------------------------------- forward

    def prepare(self, images: list[torch.Tensor]) -> torch.Tensor:
        """uint8 images (3, h_k, w_k) (sizes may differ) -> (B, 3, H, W) normalised at image_size."""
        out = []
        for im in images:
            x = im.float().unsqueeze(0) / 255.0
            if tuple(x.shape[-2:]) != self.image_size:
                x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
            out.append(x)
        return normalise_images(torch.cat(out))

    def forward_images(self, images: list[torch.Tensor] | torch.Tensor) -> list[torch.Tensor]:
        """Images -> per-pixel logits of each head [(B, C, H/p * 2^l, W/p * 2^l)], coarse to fine."""
        x = self.prepare(list(images))
        maps = self.encoder.features(x, self.feature_layers)
        outs, y = [], None
        for i, m in enumerate(maps):
            f = self.lateral[i](m)
            if i:
                f = F.interpolate(f, scale_factor=2 ** i, mode="bilinear", align_corners=False)
                y = f + self.fuse[i - 1](F.interpolate(y, size=f.shape[-2:], mode="bilinear", align_corners=False))
            else:
                y = f
            y = self.smooth[i](y)
            outs.append(self.heads[i](y))
        return outs

    def point_logits(self, batch: dict, maps: list[torch.Tensor] | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per head: (N, C) logits read (bilinearly) at every point's pixel in the first camera that
        sees it, and visible (N,) bool. Points no camera sees get zeros. `maps`: forward_images of
        the batch's cameras in order (computed when not given)."""
        if "cameras" not in batch:
            raise ConfigError("the ELiTe teacher needs camera images: the dataset must load them (data.cameras)")
        views = [(b, v) for b, vs in enumerate(batch["cameras"]) for v in vs]
        n = batch["points"].shape[0]
        device = batch["points"].device
        if maps is None:
            maps = self.forward_images([v["image"] for _, v in views]) if views else []
        visible = torch.zeros(n, dtype=torch.bool, device=device)
        outs = [torch.zeros(n, self.num_classes, device=device) for _ in range(len(self.heads))]
        off = batch["offsets"]
        for k, (b, view) in enumerate(views):
            s = int(off[b])
            valid = view["valid"].to(device)
            idx = torch.nonzero(valid & ~visible[s:s + len(valid)]).flatten()
            if idx.numel() == 0:
                continue
            h, w = view["image"].shape[-2:]
            uv = view["uv"][idx].to(device).float()
            grid = torch.stack([(uv[:, 0] + 0.5) / w * 2 - 1, (uv[:, 1] + 0.5) / h * 2 - 1], dim=1)
            for head, m in enumerate(maps):
                val = F.grid_sample(m[k:k + 1].float(), grid.view(1, 1, -1, 2), mode="bilinear", align_corners=False)
                outs[head][s + idx] = val[0, :, 0].T
            visible[s + idx] = True
        return outs, visible

    def forward(self, batch: dict) -> dict:
        """logits (N, C): the finest head at each point's pixel (0 where no camera sees the point),
        visible (N,) bool, heads: the per-point logits of every head."""
        heads, visible = self.point_logits(batch)
        return {"logits": heads[-1], "visible": visible, "heads": heads}

