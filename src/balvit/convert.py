"""Official checkpoints -> balvit checkpoints (`balvit convert --from waffleiron|scalr|rangevit`).

The authors' released state dicts are mapped onto this toolkit's models by name and shape; every
official tensor must find its place and every tensor of ours must be filled (or be one that the
model never uses), otherwise the conversion is refused with the names that do not map. The result
is a checkpoint of engine/checkpoint.py (step 0, the resolved config, `extra.converted_from`) that
`balvit eval` / `predict` load and `train.init_from` can start from.

Expected layouts (prefixes "module." (DDP) and "rangevit." (RangeViT's wrapper) are dropped):

WaffleIron (valeoai/WaffleIron, `ckpt["net"]` of utils/trainer.py; waffleiron/segmenter.py, embedding.py,
backbone.py) and ScaLR (valeoai/ScaLR: `ckpt["net"]` of utils/finetuner.py after linear probing or
fine-tuning, or `ckpt["model_point"]` / `["model_points"]` of the distilled backbone, utils/distiller.py),
with F channels, L layers, C classes, K = 16 neighbours:

    official                                       ours (models/waffleiron.py)        change
    embed.norm.*            BN1d(5)                embed.norm.*
    embed.conv1.{weight (F,5,1), bias}             embed.point.*                      squeeze k
    embed.conv2.0.*         BN2d(5)                embed.nbr.0.*
    embed.conv2.1.weight    (F,5,1,1)              embed.nbr.1.weight                 squeeze k
    embed.conv2.2.*         BN2d(F)                embed.nbr.2.*
    embed.conv2.4.weight    (F,F,1,1)              embed.nbr.4.weight                 squeeze k
    embed.final.{weight (F,2F,1), bias}            embed.merge.*                      squeeze k
    waffleiron.spatial_mix.l.norm.*                layers.l.spatial.norm.*            (BN1d or LayerNorm)
    waffleiron.spatial_mix.l.ffn.0.* (F,1,3,3)     layers.l.spatial.conv1.*
    waffleiron.spatial_mix.l.ffn.2.*               layers.l.spatial.conv2.*
    waffleiron.spatial_mix.l.scale.weight (F,1,1)  layers.l.spatial.scale (F,)        flatten
    waffleiron.channel_mix.l.norm.*                layers.l.channel.norm.*
    waffleiron.channel_mix.l.mlp.0.* (F,F,1)       layers.l.channel.fc1.*             squeeze k
    waffleiron.channel_mix.l.mlp.2.*               layers.l.channel.fc2.*             squeeze k
    waffleiron.channel_mix.l.scale.weight          layers.l.channel.scale (F,)        flatten
    classif.{weight (C,F,1), bias}                 head.1.*                           squeeze k (WaffleIron:
                                                                                      model.waffleiron.head_norm false)
    classif.0.* BN1d(F), classif.1.* (C,F,1)       head.0.*, head.1.*                 (ScaLR downstream head)
    classif.{weight (1024,F,1), bias}              not mapped: ScaLR's distillation head (a pretrained
                                                   backbone; our head keeps its zero initialisation)

RangeViT (valeoai/rangevit, `ckpt["model"]` of main.py; models/rangevit.py, stems.py, decoders.py,
rangevit_kpconv.py; our model needs model.rangevit.official_layers true):

    encoder.patch_embed.conv_block.i.*             stem.blocks.i.*                    (same block names)
    encoder.patch_embed.proj_block.1.*             stem.proj.*
    encoder.cls_token                              backbone.model.embeddings.cls_token
    encoder.pos_embed (1, 1+h*w, D)                pos_embed                          (h, w) = the window's token grid
    encoder.blocks.i.norm1/norm2.*                 backbone.model.encoder.layer.i.norm1/norm2.*
    encoder.blocks.i.attn.qkv.{weight (3D,D), bias} ...layer.i.attention.{q,k,v}_proj.*  split in 3
    encoder.blocks.i.attn.proj.*                   ...layer.i.attention.o_proj.*
    encoder.blocks.i.mlp.fc1/fc2.*                 ...layer.i.mlp.fc1/fc2.*
    encoder.blocks.i.ls1/ls2.gamma (if any)        ...layer.i.layer_scale1/2.lambda1  (else 1: no LayerScale)
    encoder.norm.*                                 backbone.model.layernorm.*
    decoder.up_conv_block.conv_upsample.0.*        decoder.up.*
    decoder.up_conv_block.conv1.{0,2}.*            decoder.conv.0.{0,2}.*
    decoder.up_conv_block.conv_output.{0,2}.*      decoder.conv.1.{0,2}.*
    kpclassifier.kpconv.weights (K,Cin,Cout)       refiner.weight
    kpclassifier.kpconv.kernel_points (K,3)        refiner.kernel
    kpclassifier.bn.*                              refiner_bn.*
    kpclassifier.head.{weight (C,Cr,1,1), bias}    head.*                             squeeze
    decoder.head.* (RangeViT without KPConv)       refused: ours always classifies points after a refiner
Our backbone tensors that RangeViT never uses (its patch projection, position embeddings and mask
token: the conv stem and pos_embed replace them) keep the values the config builds. Class counts:
RangeViT's checkpoints include the ignore class (17 on nuScenes, 20 on SemanticKITTI) at index 0;
ours do not: the head rows of classes 1..C are taken (`_drop_ignore_row`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .config import to_dict
from .data.labels import labels_for
from .engine.checkpoint import save_checkpoint
from .models import build_model
from .run_config import Config
from .errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

SOURCES = ("waffleiron", "scalr", "rangevit")


def read_official(path: str | Path, source: str) -> dict[str, torch.Tensor]:
    """The model state dict inside an official checkpoint file, prefixes removed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"official checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file
        raise CheckpointError(f"{path}: not a readable torch file ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(ckpt).__name__}")
    for key in ("net", "model_point", "model_points", "model", "state_dict"):
        if isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    for k, v in ckpt.items():
        if not torch.is_tensor(v):
            raise CheckpointError(f"{path}: entry {k!r} is not a tensor: not a {source} state dict")
    if not ckpt:
        raise CheckpointError(f"{path}: no tensors found")
    return strip_prefixes(ckpt)


def strip_prefixes(state: dict) -> dict:
    """Drop the "module." (DDP) and "rangevit." (RangeViT's wrapper module) prefixes of the names."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "rangevit."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


class _Mapper:
    """Collects official -> ours assignments and refuses what does not fit."""

    def __init__(self, official: dict, ours: dict, path: str):
        self.official, self.ours, self.path = official, ours, path
        self.used: set[str] = set()
        self.out: dict[str, torch.Tensor] = {}

    def take(self, src: str, dst: str, fn=None) -> None:
        if src not in self.official:
            raise CheckpointError(f"{self.path}: official tensor {src!r} is missing (expected for our {dst!r})")
        value = self.official[src]
        value = fn(value) if fn is not None else value
        if dst not in self.ours:
            raise CheckpointError(f"{self.path}: {src!r} maps to {dst!r}, which this model config does not have")
        if tuple(value.shape) != tuple(self.ours[dst].shape):
            raise CheckpointError(f"{self.path}: {src!r} {tuple(self.official[src].shape)} does not fit our {dst!r} "
                                  f"{tuple(self.ours[dst].shape)}: set the config to the checkpoint's architecture")
        self.used.add(src)
        self.out[dst] = value.to(self.ours[dst].dtype).clone()

    def take_module(self, src: str, dst: str, fn=None) -> None:
        """Every official tensor under `src.` -> the same suffix under `dst.`."""
        keys = [k for k in self.official if k.startswith(src + ".")]
        if not keys:
            raise CheckpointError(f"{self.path}: no official tensors under {src!r} (expected for our {dst!r})")
        for k in keys:
            self.take(k, dst + k[len(src):], fn)

    def finish(self, unused_ours: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
        left = sorted(set(self.official) - self.used)
        if left:
            raise CheckpointError(f"{self.path}: {len(left)} official tensors do not map onto this model: {left[:8]}")
        missing = sorted(k for k in self.ours if k not in self.out and not any(k.startswith(u) for u in unused_ours))
        if missing:
            raise CheckpointError(f"{self.path}: {len(missing)} tensors of our model get no official value: {missing[:8]}")
        return {**{k: v for k, v in self.ours.items() if k not in self.out}, **self.out}


def squeeze_kernel(t: torch.Tensor) -> torch.Tensor:
    """A 1x1 Conv1d / Conv2d weight (O, I, 1[, 1]) -> the Linear weight (O, I)."""
    return t.reshape(t.shape[0], t.shape[1])


def waffleiron_state(official: dict, model, cfg: Config, path: str, source: str) -> dict:
    """The official WaffleIron / ScaLR state dict -> our WaffleIron's trainable state (see the module docstring)."""
    official = strip_prefixes(official)
    w = cfg.model.waffleiron
    depth = 1 + max((int(k.split(".")[2]) for k in official if k.startswith("waffleiron.channel_mix.")), default=-1)
    width = official["embed.conv1.weight"].shape[0] if "embed.conv1.weight" in official else None
    if depth != w.depth or width != w.width:
        raise CheckpointError(f"{path}: a WaffleIron of depth {depth}, width {width}; the config has "
                              f"model.waffleiron.depth {w.depth}, width {w.width}")
    layer_norm = "waffleiron.channel_mix.0.norm.running_mean" not in official
    if layer_norm != (w.norm == "layer"):
        raise CheckpointError(f"{path}: its token norm is {'LayerNorm' if layer_norm else 'BatchNorm'}; set "
                              f"model.waffleiron.norm={'layer' if layer_norm else 'batch'}")
    m = _Mapper(official, model.trainable_state_dict(), path)
    m.take_module("embed.norm", "embed.norm")
    m.take("embed.conv1.weight", "embed.point.weight", squeeze_kernel)
    m.take("embed.conv1.bias", "embed.point.bias")
    m.take_module("embed.conv2.0", "embed.nbr.0")
    m.take("embed.conv2.1.weight", "embed.nbr.1.weight", squeeze_kernel)
    m.take_module("embed.conv2.2", "embed.nbr.2")
    m.take("embed.conv2.4.weight", "embed.nbr.4.weight", squeeze_kernel)
    m.take("embed.final.weight", "embed.merge.weight", squeeze_kernel)
    m.take("embed.final.bias", "embed.merge.bias")
    for i in range(depth):
        s, c = f"waffleiron.spatial_mix.{i}", f"waffleiron.channel_mix.{i}"
        m.take_module(f"{s}.norm", f"layers.{i}.spatial.norm")
        m.take_module(f"{s}.ffn.0", f"layers.{i}.spatial.conv1")
        m.take_module(f"{s}.ffn.2", f"layers.{i}.spatial.conv2")
        m.take(f"{s}.scale.weight", f"layers.{i}.spatial.scale", lambda t: t.reshape(-1))
        m.take_module(f"{c}.norm", f"layers.{i}.channel.norm")
        m.take(f"{c}.mlp.0.weight", f"layers.{i}.channel.fc1.weight", squeeze_kernel)
        m.take(f"{c}.mlp.0.bias", f"layers.{i}.channel.fc1.bias")
        m.take(f"{c}.mlp.2.weight", f"layers.{i}.channel.fc2.weight", squeeze_kernel)
        m.take(f"{c}.mlp.2.bias", f"layers.{i}.channel.fc2.bias")
        m.take(f"{c}.scale.weight", f"layers.{i}.channel.scale", lambda t: t.reshape(-1))
    num_classes = model.head[1].out_features
    if "classif.1.weight" in official:  # ScaLR's downstream head: BN + linear
        if not w.head_norm:
            raise CheckpointError(f"{path}: its classifier is BatchNorm + linear; set model.waffleiron.head_norm=true")
        m.take_module("classif.0", "head.0")
        m.take("classif.1.weight", "head.1.weight", squeeze_kernel)
        m.take("classif.1.bias", "head.1.bias")
        return m.finish()
    head = official.get("classif.weight")
    if head is None:
        raise CheckpointError(f"{path}: no classifier (classif.*) found: not a {source} checkpoint")
    if source == "scalr" and head.shape[0] != num_classes:  # the distilled backbone + its distillation head
        log.warning("%s: classif (%d x %d) is ScaLR's distillation head, not a classifier: not converted; the "
                    "segmentation head keeps its zero initialisation (train it: linear probing / fine-tuning)",
                    path, head.shape[0], head.shape[1])
        m.used.update({"classif.weight", "classif.bias"})
        return m.finish(unused_ours=("head.",))
    if w.head_norm:
        raise CheckpointError(f"{path}: its classifier is a single linear layer (WaffleIron's classif); set "
                              f"model.waffleiron.head_norm=false")
    m.take("classif.weight", "head.1.weight", squeeze_kernel)
    m.take("classif.bias", "head.1.bias")
    return m.finish()


def _drop_ignore_row(n_classes: int, path: str):
    def fn(t: torch.Tensor) -> torch.Tensor:
        if t.shape[0] == n_classes + 1:  # RangeViT keeps the ignore class as output 0
            return t[1:]
        if t.shape[0] != n_classes:
            raise CheckpointError(f"{path}: the head has {t.shape[0]} outputs; this dataset has {n_classes} classes "
                                  f"(+ 1 ignore class in RangeViT's head)")
        return t
    return fn


def rangevit_state(official: dict, model, cfg: Config, path: str) -> dict:
    """The official RangeViT state dict -> our RangeViT's trainable state (see the module docstring)."""
    official = strip_prefixes(official)
    r = cfg.model.rangevit
    if not r.official_layers:
        raise CheckpointError(f"{path}: RangeViT's own layer layout is needed: set model.rangevit.official_layers=true")
    if r.refiner != "kpconv":
        raise CheckpointError(f"{path}: set model.rangevit.refiner=kpconv (RangeViT's KPClassifier)")
    if "decoder.head.weight" in official:
        raise CheckpointError(f"{path}: a RangeViT without the KPConv refiner (decoder.head: per-pixel classes) "
                              f"does not map onto this model, which classifies points after a refiner")
    pos = official.get("encoder.pos_embed")
    if pos is not None and pos.shape[1] != model.pos_embed.shape[1]:
        raise CheckpointError(f"{path}: encoder.pos_embed holds {pos.shape[1] - 1} tokens, the config's window grid "
                              f"{model.pos_grid} has {model.pos_embed.shape[1] - 1}: set data.range.height / "
                              f"model.rangevit.window / patch_size to the checkpoint's (image_size / patch_stride)")
    m = _Mapper(official, model.trainable_state_dict(), path)
    n_blocks = 1 + max((int(k.split(".")[3]) for k in official if k.startswith("encoder.patch_embed.conv_block.")),
                       default=-1)
    if n_blocks != r.stem_blocks + 1:
        raise CheckpointError(f"{path}: its stem has {n_blocks - 1} context blocks + a ResBlock; set "
                              f"model.rangevit.stem_blocks={n_blocks - 1}")
    for i in range(n_blocks):
        m.take_module(f"encoder.patch_embed.conv_block.{i}", f"stem.blocks.{i}")
    m.take_module("encoder.patch_embed.proj_block.1", "stem.proj")
    m.take("encoder.cls_token", "backbone.model.embeddings.cls_token")
    m.take("encoder.pos_embed", "pos_embed")
    hf = "backbone.model.encoder.layer"
    depth = 1 + max(int(k.split(".")[2]) for k in official if k.startswith("encoder.blocks."))
    if depth != model.backbone.depth:
        raise CheckpointError(f"{path}: a ViT of {depth} blocks; model.backbone.name {model.backbone.name} has "
                              f"{model.backbone.depth}")
    for i in range(depth):
        o, d = f"encoder.blocks.{i}", f"{hf}.{i}"
        m.take_module(f"{o}.norm1", f"{d}.norm1")
        m.take_module(f"{o}.norm2", f"{d}.norm2")
        for part in ("weight", "bias"):  # qkv rows: [q; k; v]
            for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
                m.take(f"{o}.attn.qkv.{part}", f"{d}.attention.{name}.{part}",
                       lambda t, j=j: t.reshape(3, t.shape[0] // 3, *t.shape[1:])[j])
        m.take_module(f"{o}.attn.proj", f"{d}.attention.o_proj")
        m.take_module(f"{o}.mlp.fc1", f"{d}.mlp.fc1")
        m.take_module(f"{o}.mlp.fc2", f"{d}.mlp.fc2")
        for ls, ours in (("ls1", "layer_scale1"), ("ls2", "layer_scale2")):
            key = f"{o}.{ls}.gamma"
            if key in official:
                m.take(key, f"{d}.{ours}.lambda1")
            else:  # no LayerScale in RangeViT's blocks: ours multiplies by 1
                m.out[f"{d}.{ours}.lambda1"] = torch.ones_like(m.ours[f"{d}.{ours}.lambda1"])
    m.take_module("encoder.norm", "backbone.model.layernorm")
    m.take_module("decoder.up_conv_block.conv_upsample.0", "decoder.up")
    m.take_module("decoder.up_conv_block.conv1.0", "decoder.conv.0.0")
    m.take_module("decoder.up_conv_block.conv1.2", "decoder.conv.0.2")
    m.take_module("decoder.up_conv_block.conv_output.0", "decoder.conv.1.0")
    m.take_module("decoder.up_conv_block.conv_output.2", "decoder.conv.1.2")
    m.take("kpclassifier.kpconv.weights", "refiner.weight")
    m.take("kpclassifier.kpconv.kernel_points", "refiner.kernel")
    m.take_module("kpclassifier.bn", "refiner_bn")
    drop = _drop_ignore_row(model.num_classes, path)
    m.take("kpclassifier.head.weight", "head.weight", lambda t: drop(squeeze_kernel(t)))
    m.take("kpclassifier.head.bias", "head.bias", drop)
    unused = ("backbone.model.embeddings.position_embeddings", "backbone.model.embeddings.patch_embeddings.",
              "backbone.model.embeddings.mask_token")
    return m.finish(unused_ours=unused)


def convert(source: str, checkpoint: str | Path, cfg: Config, out: str | Path) -> dict:
    """Convert an official checkpoint for the model of `cfg`; writes `out`, returns a summary."""

    if source not in SOURCES:
        raise ConfigError(f"--from {source!r}: expected one of {', '.join(SOURCES)}")
    want = "rangevit" if source == "rangevit" else "waffleiron"
    if cfg.model.name != want:
        raise ConfigError(f"--from {source} converts to a {want!r} model; the config builds {cfg.model.name!r}")
    path = str(checkpoint)
    official = read_official(checkpoint, source)
    model = build_model(cfg, labels_for(cfg.data.dataset).num_classes)
    if source == "rangevit":
        state = rangevit_state(official, model, cfg, path)
    else:
        state = waffleiron_state(official, model, cfg, path, source)
    model.load_trainable_state_dict(state, source=path)
    extra = {"converted_from": {"source": source, "checkpoint": str(Path(checkpoint).resolve()),
                                "tensors": len(official)}}
    save_checkpoint(out, model=model, step=0, config=to_dict(cfg), extra=extra)
    log.info("converted %d official tensors of %s (%s) into %s", len(official), path, source, out)
    return {"out": str(out), "official_tensors": len(official), "tensors": len(state)}
