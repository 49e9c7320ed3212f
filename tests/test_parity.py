"""Numerical parity with the official code: the authors' models with random weights, their state
dicts converted by balvit.convert, both fed the same points, cells and neighbours.

- BALVIT_OFFICIAL_WAFFLEIRON=/path/to/a checkout of valeoai/WaffleIron: WaffleIron (batch norm,
  its linear `classif`) and the ScaLR WI-48 layout (layer norm, three planes, the BN + linear
  downstream head of valeoai/ScaLR finetune.py), cells from its own PCDataset.get_occupied_2d_cells;
- BALVIT_OFFICIAL_RANGEVIT=/path/to/a checkout of valeoai/rangevit: RangeViT with the conv stem, the
  up-conv decoder and the KPConv classifier, sliding-window inference (utils/inference).
The official RangeViT imports timm and einops, which are not installed here: minimal stand-ins
with the names it uses are put in sys.modules for the test. Skipped without the environment variables.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import balvit.models.waffleiron
from balvit.run_config import load_config
from balvit.convert import convert, rangevit_state, waffleiron_state
from balvit.data.dataset import collate
from balvit.engine.checkpoint import load_checkpoint
from balvit.models import build_model
from conftest import REPO

WAFFLEIRON = os.environ.get("BALVIT_OFFICIAL_WAFFLEIRON")
RANGEVIT = os.environ.get("BALVIT_OFFICIAL_RANGEVIT")
needs_waffleiron = pytest.mark.skipif(not WAFFLEIRON, reason="set BALVIT_OFFICIAL_WAFFLEIRON to a valeoai/WaffleIron checkout")
needs_rangevit = pytest.mark.skipif(not RANGEVIT, reason="set BALVIT_OFFICIAL_RANGEVIT to a valeoai/rangevit checkout")
OWN_NAMES = ("utils", "datasets", "models", "waffleiron", "timm", "einops")  # top-level names of the official code


@contextlib.contextmanager
def official(root: str, stand_ins: dict | None = None):
    """Import from an official checkout: its root first on sys.path; its top-level packages (both
    repositories have a `utils`) are dropped from sys.modules before and after."""
    def purge():
        for name in list(sys.modules):
            if name.split(".")[0] in OWN_NAMES:
                del sys.modules[name]
    purge()
    sys.modules.update(stand_ins or {})
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path.remove(str(root))
        purge()


def randomise(module: nn.Module, seed: int, weights: bool = True) -> None:
    """Random batch-norm statistics and norm affines (so that no layer is an identity) and, with
    `weights`, random weights everywhere else (otherwise the module's own initialisation stays)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point() or "kernel_points" in name:
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(0.2 * torch.randn(t.shape, generator=g))
            elif t.dim() == 1 and name.endswith(".weight") and ("norm" in name or "bn" in name or weights):
                t.copy_(1.0 + 0.2 * torch.randn(t.shape, generator=g))  # norm scales
            elif t.dim() == 1 and name.endswith(".bias") and ("norm" in name or "bn" in name):
                t.copy_(0.2 * torch.randn(t.shape, generator=g))
            elif weights:
                t.copy_(0.2 * torch.randn(t.shape, generator=g))


# ---------------------------------------------------------------------------------- WaffleIron

FOV = ((-32.0, -32.0, -4.0), (32.0, 32.0, 4.0))


def scan(n: int, seed: int) -> np.ndarray:
    """(n, 4) float32 points inside FOV (on cell boundaries too), intensity 0..1."""
    rng = np.random.default_rng(seed)
    pts = np.stack([rng.uniform(-31.9, 31.9, n), rng.uniform(-31.9, 31.9, n), rng.uniform(-3.9, 3.9, n),
                    rng.random(n)], 1).astype(np.float32)
    pts[: n // 10, 0] = np.float32(-32 + 2.0 * rng.integers(1, 31, n // 10))  # on (x) cell boundaries
    return pts


def official_inverse_counts(index: torch.Tensor, size: int) -> torch.Tensor:
    """1 / (count + 1e-6) in float64, the weights of valeoai/WaffleIron helper_projection.py."""
    count = torch.zeros(size, dtype=torch.float64).index_add_(0, index, torch.ones(len(index), dtype=torch.float64))
    return (1.0 / (count + 1e-6))[:, None]


def official_waffleiron_inputs(pcdataset_cls, pts: np.ndarray, planes, grids, neighbors: int):
    """The official PCDataset's arithmetic on one scan: features, cell_ind (P, N), neighbours (K+1, N)."""
    from scipy.spatial import cKDTree

    ds = pcdataset_cls(rootdir=None, phase="val", input_feat=["intensity", "xyz", "radius"], dim_proj=planes,
                       grids_shape=grids, fov_xyz=FOV, num_neighbors=neighbors)
    pc = ds.prepare_input_features(pts)
    cells = ds.get_occupied_2d_cells(pc)  # (P, N)
    _, nbr = cKDTree(pc[:, :3]).query(pc[:, :3], k=neighbors + 1)
    return pc[:, 3:].T, cells, nbr.T


def our_waffleiron_cfg(width, depth, planes, grids, norm, head_norm, neighbors):
    return load_config(None, [
        "model.name=waffleiron", f"model.waffleiron.width={width}", f"model.waffleiron.depth={depth}",
        f"model.waffleiron.projections={list(planes)}", f"model.waffleiron.grids={[list(g) for g in grids]}",
        f"model.waffleiron.fov={[list(FOV[0]), list(FOV[1])]}", f"model.waffleiron.norm={norm}",
        f"model.waffleiron.head_norm={str(head_norm).lower()}", f"model.waffleiron.neighbors={neighbors}",
        f"data.sampling.neighbors={neighbors}"])


def waffleiron_case(kind: str):
    if kind == "waffleiron":  # WaffleIron-48-256__kitti.yaml layout, smaller
        return dict(width=32, depth=6, planes=[2, 1, 0], grids=[[32, 32], [32, 4], [32, 4]], norm="batch",
                    head_norm=False, neighbors=16)
    return dict(width=48, depth=6, planes=[2, 1, 0], grids=[[64, 64], [64, 8], [64, 8]], norm="layer",
                head_norm=True, neighbors=16)  # ScaLR WI_768_pretrain.yaml layout (layernorm), smaller


def build_official_waffleiron(kind: str, c: dict, classes: int):
    from waffleiron import Segmenter  # noqa: official code

    net = Segmenter(input_channels=5, feat_channels=c["width"], nb_class=classes, depth=c["depth"],
                    grid_shape=c["grids"], drop_path_prob=0.0, which_norm="layernorm" if c["norm"] == "layer" else "batchnorm")
    if kind == "scalr":  # valeoai/ScaLR finetune.py: the downstream head is BatchNorm + Conv1d
        net.classif = nn.Sequential(nn.BatchNorm1d(c["width"]), nn.Conv1d(c["width"], classes, 1))
    randomise(net, 1)
    with torch.no_grad():  # logits of order 1, so that the 1e-5 bound is also absolute
        for name, t in net.classif.named_parameters():
            t.mul_(0.05)
    return net.eval()


@needs_waffleiron
@pytest.mark.parametrize("kind", ["waffleiron", "scalr"])
def test_waffleiron_parity_end_to_end(kind, capsys, monkeypatch):
    c = waffleiron_case(kind)
    classes = 19
    with official(WAFFLEIRON):
        from datasets.pc_dataset import PCDataset  # noqa: official code

        net = build_official_waffleiron(kind, c, classes)
        scans = [scan(3000, 0), scan(2200, 1)]
        inputs = [official_waffleiron_inputs(PCDataset, p, c["planes"], c["grids"], c["neighbors"]) for p in scans]
    cfg = our_waffleiron_cfg(**c)
    ours = build_model(cfg, classes).eval()
    ours.load_trainable_state_dict(waffleiron_state(net.state_dict(), ours, cfg, "official", kind))

    # official batch: zero-padded to the longest scan (datasets/pc_dataset.py Collate)
    nmax = max(len(p) for p in scans)
    feat = torch.zeros(2, 5, nmax)
    cells = torch.zeros(2, len(c["planes"]), nmax, dtype=torch.long)
    nbrs = torch.full((2, c["neighbors"] + 1, nmax), nmax - 1, dtype=torch.long)
    occupied = torch.zeros(2, nmax)
    for b, (f, ci, nb) in enumerate(inputs):
        n = f.shape[1]
        feat[b, :, :n], cells[b, :, :n], nbrs[b, :, :n], occupied[b, :n] = torch.from_numpy(f), torch.from_numpy(ci), torch.from_numpy(nb), 1
    # ours: the same points, our own cells (compared below) and the same neighbour lists
    batch = collate([{"points": torch.from_numpy(p), "labels": torch.zeros(len(p), dtype=torch.long),
                      "point_index": torch.arange(len(p)), "rv_rc": torch.zeros(len(p), 2, dtype=torch.long),
                      "rv_coord": torch.zeros(len(p), 2), "bev_cell": torch.zeros(len(p), 2, dtype=torch.long),
                      "rv": torch.zeros(6, 2, 2), "rv_index": torch.zeros(2, 2, dtype=torch.long), "rv_col0": 0,
                      "frame": str(k), "index": k, "num_invalid": 0, "sub_index": torch.arange(len(p)),
                      "up_index": torch.arange(len(p)), "knn": torch.from_numpy(inp[2].T.copy())}
                     for k, (p, inp) in enumerate(zip(scans, inputs))])
    for k, plane in enumerate(ours.planes):  # our cell arithmetic = the official one, every point
        official_cells = torch.cat([torch.from_numpy(inp[1][k]) for inp in inputs])
        assert torch.equal(plane.cells_torch(batch["points"][:, :3]), official_cells)
    results = {}
    for name, dtype, eps in (("float32", torch.float32, False), ("float64", torch.float64, False),
                             ("float64, official 1e-6", torch.float64, True)):
        f = feat.to(dtype)
        f[:, 4] = f[:, 1:4].norm(dim=1) * occupied  # the radius feature in this precision, as ours computes it
        with torch.no_grad():
            ref = net.to(dtype)(f, cells, occupied.to(dtype), nbrs)  # (B, C, Nmax)
            if eps:  # the official mean: sum * 1 / (count + 1e-6) (waffleiron/helper_projection.py)
                monkeypatch.setattr(balvit.models.waffleiron, "inverse_counts", official_inverse_counts)
            got = ours.to(dtype)({**batch, "points": batch["points"].to(dtype)})["logits"]
            monkeypatch.undo()
        ref = torch.cat([ref[b, :, :len(p)].T for b, p in enumerate(scans)])
        results[name] = (got - ref).abs().max().item()
        scale = ref.abs().max().item()
    # float32: within 1e-5 of the logit scale; float64: ours is the exact mean, theirs divides by
    # count + 1e-6 (a relative 1e-6 / count per layer); with that epsilon the two agree to rounding
    assert results["float32"] <= 1e-5 * max(1.0, scale) and scale < 10, (results, scale)
    assert results["float64"] <= 1e-6 * max(1.0, scale), (results, scale)
    assert results["float64, official 1e-6"] <= 1e-12 * max(1.0, scale), (results, scale)
    with capsys.disabled():
        print(f"\n[parity {kind}] max |ours - official| logits (scale {scale:.3g}): "
              + ", ".join(f"{k} {v:.3g}" for k, v in results.items()))


@needs_waffleiron
def test_converted_waffleiron_checkpoint_loads_in_balvit_eval(tmp_path):
    """`balvit convert` writes a checkpoint that `balvit eval` runs (on generated data)."""
    from balvit.cli import main
    from balvit.data.synthetic import generate

    c = waffleiron_case("waffleiron")
    with official(WAFFLEIRON):
        net = build_official_waffleiron("waffleiron", c, 19)
    torch.save({"epoch": 3, "net": {f"module.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "ckpt_last.pth")
    root = tmp_path / "data"
    generate("semantickitti", root, sequences=["00", "08"], frames=2, seed=1, beams=16, azimuth_steps=256,
             cameras=False, progress=False)
    cfg_file = tmp_path / "wi.yaml"
    cfg_file.write_text(f"_base_: {REPO / 'config/synthetic/tiny.yaml'}\n")
    over = [f"{k}={v}" for k, v in (o.split("=", 1) for o in [
        "model.name=waffleiron", f"model.waffleiron.width={c['width']}", f"model.waffleiron.depth={c['depth']}",
        "model.waffleiron.projections=[2,1,0]", "model.waffleiron.grids=[[32,32],[32,4],[32,4]]",
        f"model.waffleiron.fov={[list(FOV[0]), list(FOV[1])]}", "model.waffleiron.head_norm=false",
        "data.sampling.voxel_size=0.1", "data.sampling.neighbors=16", "eval.pictures=0", "data.num_workers=0"])]
    assert main(["convert", "--from", "waffleiron", str(tmp_path / "ckpt_last.pth"), "--config", str(cfg_file),
                 "--out", str(tmp_path / "wi.pt"), *over]) == 0
    state = load_checkpoint(tmp_path / "wi.pt")
    assert state["extra"]["converted_from"]["source"] == "waffleiron" and state["step"] == 0
    assert main(["eval", str(cfg_file), "--data_root", str(root), "--checkpoint", str(tmp_path / "wi.pt"),
                 "--no-progress", *over]) == 0


# ------------------------------------------------------------------------------------ RangeViT


@contextlib.contextmanager
def default_dtype(dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def timm_stand_in() -> dict:
    """timm's names the official RangeViT imports: timm.create_model (unused with random weights),
    timm.models.layers.DropPath and trunc_normal_."""
    class DropPath(nn.Module):
        def __init__(self, drop_prob: float = 0.0):
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            if not self.training or self.drop_prob == 0.0:
                return x
            keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.drop_prob)
            return x * keep / (1 - self.drop_prob)

    timm = types.ModuleType("timm")
    models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    layers.DropPath, layers.trunc_normal_ = DropPath, nn.init.trunc_normal_
    timm.models, models.layers = models, layers

    def create_model(*args, **kwargs):
        raise RuntimeError("timm stand-in: no pretrained models")
    timm.create_model = create_model
    return {"timm": timm, "timm.models": models, "timm.models.layers": layers}


def einops_stand_in() -> dict:
    """einops' two uses in RangeViT's decoders.py: rearrange 'b (h w) c -> b c h w' and the layer
    Rearrange 'b (c s0 s1) h w -> b c (h s0) (w s1)'."""
    einops = types.ModuleType("einops")
    layers = types.ModuleType("einops.layers")
    torch_layers = types.ModuleType("einops.layers.torch")

    def rearrange(x, pattern, h):
        assert pattern == "b (h w) c -> b c h w", pattern
        b, n, c = x.shape
        return x.reshape(b, h, n // h, c).permute(0, 3, 1, 2)

    class Rearrange(nn.Module):
        def __init__(self, pattern, s0, s1):
            super().__init__()
            assert pattern == "b (c s0 s1) h w -> b c (h s0) (w s1)", pattern
            self.s0, self.s1 = s0, s1

        def forward(self, x):
            b, c, h, w = x.shape
            c //= self.s0 * self.s1
            return x.view(b, c, self.s0, self.s1, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c, h * self.s0, w * self.s1)

    einops.rearrange = rearrange
    torch_layers.Rearrange = Rearrange
    einops.layers, layers.torch = layers, torch_layers
    return {"einops": einops, "einops.layers": layers, "einops.layers.torch": torch_layers}


def rangevit_utils_packages(root: str) -> dict:
    """`utils`, `utils.tools` and `utils.inference` of the RangeViT checkout as bare packages: their
    __init__ files import tensorboardX and prettytable (logging only), so only the two modules the
    model needs (utils/tools/utils.py, utils/inference/inference_utils.py) are loaded from them."""
    out = {}
    for name in ("utils", "utils.tools", "utils.inference"):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(Path(root, *name.split(".")))]
        out[name] = pkg
    return out


def rangevit_stand_ins() -> dict:
    return {**timm_stand_in(), **einops_stand_in(), **rangevit_utils_packages(RANGEVIT)}


D_H = 32
RV = dict(height=32, width=768, window=384, stride=256)


def our_rangevit_cfg():
    return load_config(REPO / "config/baselines/rangevit_nuscenes.yaml", [
        "model.backbone.name=vit_small_patch16", "model.backbone.weights=random", "model.rangevit.official_layers=true",
        "model.rangevit.stem_channels=32", "model.rangevit.stem_blocks=3", f"model.rangevit.hidden_channels={D_H}",
        f"model.rangevit.decoder_channels={D_H}", f"model.rangevit.refiner_channels={D_H}",
        f"model.rangevit.window={RV['window']}", f"model.rangevit.stride={RV['stride']}",
        f"data.range.height={RV['height']}", f"data.range.width={RV['width']}", "data.range.rows=fov"])


@needs_rangevit
def test_rangevit_parity_sliding_window_and_kpconv(tmp_path, monkeypatch, capsys):
    from balvit.data.dataset import SegmentationDataset
    from conftest import MemoryScans

    monkeypatch.chdir(tmp_path)  # the official KPConv writes its kernel file under ./kernels
    np.random.seed(0)
    torch.manual_seed(0)
    with official(RANGEVIT, rangevit_stand_ins()):
        import models as official_models  # noqa: official code
        from utils.inference.inference_utils import inference  # noqa: official code

        net = official_models.RangeViT(
            in_channels=5, n_cls=17, backbone="vit_small_patch16_384", image_size=(RV["height"], RV["window"]),
            pretrained_path=None, new_patch_size=[2, 8], new_patch_stride=[2, 8], conv_stem="ConvStem",
            stem_base_channels=32, stem_hidden_dim=D_H, skip_filters=D_H, decoder="up_conv",
            up_conv_d_decoder=D_H, up_conv_scale_factor=[2, 8], use_kpconv=True)
    randomise(net, 2, weights=False)  # RangeViT's own initialisation: logits of order 1
    net.eval()
    cfg = our_rangevit_cfg()
    ours = build_model(cfg, 16).eval()
    ours.load_trainable_state_dict(rangevit_state(net.state_dict(), ours, cfg, "official"))

    # one scan through our loader: range image, continuous coordinates and 7 neighbours
    ds = SegmentationDataset(MemoryScans([4000], seed=7), cfg.data, train=False)
    batch = collate([ds[0]])
    h, w = batch["rv"].shape[-2:]
    knn = batch["sub_index"][batch["knn"][:, :7]]
    results = {}
    for dtype in (torch.float32, torch.float64):
        net.to(dtype)
        ours.to(dtype)
        b = {**batch, "rv": batch["rv"].to(dtype), "points": batch["points"].to(dtype), "rv_coord": batch["rv_coord"].to(dtype)}
        row, col = b["rv_coord"][:, 0], b["rv_coord"][:, 1]
        px = 2.0 * (col.clamp(0, w) / w - 0.5)  # valeoai/rangevit dataset/range_view_loader.py (px, py clamped)
        py = 2.0 * (row.clamp(0, h) / h - 0.5)
        with torch.no_grad(), default_dtype(dtype):  # the official merge allocates with the default dtype
            feats = inference(net.rangevit, [b["rv"][:, :5]], [{"flip": False}], ori_shape=(h, w),
                              window_size=(RV["height"], RV["window"]), window_stride=(RV["height"], RV["stride"]),
                              batch_size=1, use_kpconv=True)  # (C, H, W), the official sliding window
            ref = net.rangevit.kpclassifier(feats[None], px, py, b["points"][:, :3], knn,
                                            torch.tensor([len(knn)]))[:, :, 0, 0]  # (N, 17)
            got = ours(b)["logits"]  # (N, 16): no ignore class
        results[dtype] = (got - ref[:, 1:]).abs().max().item()
        scale = ref.abs().max().item()
        assert results[dtype] <= (1e-5 if dtype == torch.float32 else 1e-9) * max(1.0, scale), (dtype, results, scale)
    assert scale < 100, scale
    with capsys.disabled():
        print(f"\n[parity rangevit] max |ours - official| logits: float32 {results[torch.float32]:.3g}, "
              f"float64 {results[torch.float64]:.3g} (logit scale {scale:.3g})")


@needs_rangevit
def test_converter_refuses_what_does_not_map(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with official(RANGEVIT, rangevit_stand_ins()):
        import models as official_models  # noqa: official code

        net = official_models.RangeViT(
            in_channels=5, n_cls=17, backbone="vit_small_patch16_384", image_size=(RV["height"], RV["window"]),
            new_patch_size=[2, 8], new_patch_stride=[2, 8], conv_stem="ConvStem", stem_base_channels=32,
            stem_hidden_dim=D_H, skip_filters=D_H, decoder="up_conv", up_conv_d_decoder=D_H,
            up_conv_scale_factor=[2, 8], use_kpconv=True)
    torch.save({"model": {f"rangevit.{k}": v for k, v in net.rangevit.state_dict().items()}}, tmp_path / "rv.pth")
    cfg = our_rangevit_cfg()
    convert("rangevit", tmp_path / "rv.pth", cfg, tmp_path / "rv.pt")
    assert load_checkpoint(tmp_path / "rv.pt")["model"]["refiner.kernel"].shape == (15, 3)
    from balvit.errors import CheckpointError

    with pytest.raises(CheckpointError, match="official_layers=true"):
        convert("rangevit", tmp_path / "rv.pth", load_config(REPO / "config/baselines/rangevit_nuscenes.yaml", [
            "model.backbone.name=vit_small_patch16", "model.backbone.weights=random"]), tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="window grid"):
        bad = our_rangevit_cfg()
        bad.model.rangevit.window = 256
        convert("rangevit", tmp_path / "rv.pth", bad, tmp_path / "x.pt")


REAL_KITTI = REPO.parent / "shared" / "data" / "real" / "semantickitti"


@needs_waffleiron
@pytest.mark.skipif(not (REAL_KITTI / "sequences" / "00" / "velodyne").is_dir(), reason="real SemanticKITTI scans not found")
def test_waffleiron_parity_on_a_real_scan_from_the_loaders_on(capsys):
    """The official PCDataset pipeline (voxelise, crop to the field of view, 2D cells, 17 nearest
    neighbours, nearest-neighbour up-sampling) against our loader on SemanticKITTI 00/000000, then
    the two models on their own inputs: the same logits on all 124 668 points."""
    from balvit.data.dataset import SegmentationDataset, build_reader
    from balvit.models import loader_geometry

    planes, grids = [2, 1, 0], [[250, 250], [250, 12], [250, 12]]
    fov = ((-50.0, -50.0, -3.0), (50.0, 50.0, 2.0))  # WaffleIron-48-256__kitti.yaml
    scan_file = REAL_KITTI / "sequences" / "00" / "velodyne" / "000000.bin"
    with official(WAFFLEIRON):
        from datasets.pc_dataset import PCDataset  # noqa: official code

        class OneScan(PCDataset):
            def __len__(self):
                return 1

            def load_pc(self, index):
                pc = np.fromfile(scan_file, dtype=np.float32).reshape(-1, 4)
                return pc, np.zeros(len(pc), dtype=np.int64), str(scan_file)

        ds = OneScan(rootdir=None, phase="val", input_feat=["intensity", "xyz", "radius"], voxel_size=0.1,
                     dim_proj=planes, grids_shape=grids, fov_xyz=fov, num_neighbors=16)
        feat, _, cell_ind, nbr, upsample, _ = ds[0]
        c = dict(width=24, depth=4, planes=planes, grids=grids, norm="batch", head_norm=False, neighbors=16)
        net = build_official_waffleiron("waffleiron", c, 19)
    cfg = load_config(REPO / "config/baselines/waffleiron_kitti.yaml", [
        f"data.root={REAL_KITTI}", "data.val_sequences=['00']", "model.waffleiron.width=24", "model.waffleiron.depth=4",
        f"model.waffleiron.fov={[list(fov[0]), list(fov[1])]}", "model.waffleiron.projections=[2,1,0]",
        "model.waffleiron.grids=[[250,250],[250,12],[250,12]]", "model.waffleiron.outside_fov=crop"])
    reader = build_reader(cfg.data, "valid")
    sample = SegmentationDataset(reader, cfg.data, train=False, geometry=loader_geometry(cfg))[0]
    pts = sample["points"].numpy()
    sub = sample["sub_index"].numpy()
    # the official kept points (ordered by voxel) -> our kept points (scan order)
    theirs = feat[0, 1:4].T.astype(np.float32)  # x, y, z of the kept points
    where = {p.tobytes(): k for k, p in enumerate(pts[sub, :3])}
    perm = np.array([where[p.tobytes()] for p in theirs])  # official position -> position in sub_index
    assert len(perm) == len(sub) and len(set(perm.tolist())) == len(sub)  # the same points are kept
    np.testing.assert_array_equal(sample["plane_cells"].numpy()[perm], cell_ind[0].T)  # the same cells
    # the same neighbours (their order may differ between equidistant ones: the embedding max-pools them)
    np.testing.assert_array_equal(np.sort(perm[nbr[0].T], 1), np.sort(sample["knn"].numpy()[perm], 1))
    np.testing.assert_array_equal(perm[upsample], sample["up_index"].numpy())  # up-sampling to all points
    ours = build_model(cfg, 19).eval()
    ours.load_trainable_state_dict(waffleiron_state(net.state_dict(), ours, cfg, "official", "waffleiron"))
    with torch.no_grad():
        ref = net(torch.from_numpy(feat).float(), torch.from_numpy(cell_ind).long(), torch.ones(1, feat.shape[-1]),
                  torch.from_numpy(nbr).long())[0].T[torch.from_numpy(upsample).long()]  # (N, C)
        got = ours(collate([sample]))["logits"]
    diff, scale = (got - ref).abs().max().item(), ref.abs().max().item()
    assert got.shape == (124668, 19) and diff <= 1e-5 * max(1.0, scale), (diff, scale)
    with capsys.disabled():
        print(f"\n[parity waffleiron, real scan 00/000000, loaders included] {len(sub)} kept of {len(pts)} points; "
              f"max |ours - official| logits {diff:.3g} (scale {scale:.3g})")
