"""balvit convert without the official code: state dicts in the documented official layout (written
here from our model by the inverse of the documented map) convert back to the same model, and what
does not map is refused with the names. tests/test_parity.py runs the official models themselves."""

from __future__ import annotations

import pytest
import torch

from balvit.cli import main
from balvit.run_config import load_config
from balvit.convert import convert, read_official, waffleiron_state
from balvit.data.dataset import SegmentationDataset, collate
from balvit.engine.checkpoint import load_checkpoint, save_checkpoint
from balvit.errors import CheckpointError, ConfigError
from balvit.models import build_model, loader_geometry
from conftest import REPO, MemoryScans

WI = ["model.name=waffleiron", "model.waffleiron.width=16", "model.waffleiron.depth=3",
      "model.waffleiron.projections=[2,1,0]", "model.waffleiron.grids=[[16,16],[16,4],[16,4]]",
      "model.waffleiron.fov=[[-32,-32,-4],[32,32,4]]", "model.waffleiron.neighbors=6",
      "data.sampling.voxel_size=0.5", "data.sampling.neighbors=6", "data.range.height=16", "data.range.width=128"]


def official_layout(model, head: str) -> dict:
    """Our WaffleIron's weights under the official names (convert.py's table, read backwards).
    head: "linear" (WaffleIron's classif), "bn_linear" (ScaLR downstream) or "distill" (ScaLR pretrained)."""
    s = model.state_dict()
    conv1d = lambda t: t[..., None]  # noqa: E731
    conv2d = lambda t: t[..., None, None]  # noqa: E731
    out = {}
    for k in [k for k in s if k.startswith("embed.norm.")]:
        out[k] = s[k]
    out["embed.conv1.weight"], out["embed.conv1.bias"] = conv1d(s["embed.point.weight"]), s["embed.point.bias"]
    for i, j in ((0, 0), (2, 2)):
        for k in [k for k in s if k.startswith(f"embed.nbr.{i}.")]:
            out[f"embed.conv2.{j}." + k.split(".", 3)[3]] = s[k]
    out["embed.conv2.1.weight"], out["embed.conv2.4.weight"] = conv2d(s["embed.nbr.1.weight"]), conv2d(s["embed.nbr.4.weight"])
    out["embed.final.weight"], out["embed.final.bias"] = conv1d(s["embed.merge.weight"]), s["embed.merge.bias"]
    for k, v in s.items():
        if not k.startswith("layers."):
            continue
        _, i, part, rest = k.split(".", 3)
        mix = "spatial_mix" if part == "spatial" else "channel_mix"
        name = {"conv1": "ffn.0", "conv2": "ffn.2", "fc1": "mlp.0", "fc2": "mlp.2"}.get(rest.split(".")[0])
        if rest == "scale":
            out[f"waffleiron.{mix}.{i}.scale.weight"] = v.view(-1, 1, 1)
        elif name is not None:
            out[f"waffleiron.{mix}.{i}.{name}.{rest.split('.')[1]}"] = conv1d(v) if name.startswith("mlp") and v.dim() == 2 else v
        else:
            out[f"waffleiron.{mix}.{i}.{rest}"] = v
    if head == "linear":
        out["classif.weight"], out["classif.bias"] = conv1d(s["head.1.weight"]), s["head.1.bias"]
    elif head == "bn_linear":
        out.update({f"classif.0.{k[7:]}": v for k, v in s.items() if k.startswith("head.0.")})
        out["classif.1.weight"], out["classif.1.bias"] = conv1d(s["head.1.weight"]), s["head.1.bias"]
    else:
        out["classif.weight"], out["classif.bias"] = torch.randn(32, s["head.1.weight"].shape[1], 1), torch.randn(32)
    return out


def randomised(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for k, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if k.endswith("running_var") else 0.3 * torch.randn(t.shape, generator=g))
    return model.eval()


def batch_of(cfg):
    ds = SegmentationDataset(MemoryScans([600, 700], seed=2), cfg.data, train=False, geometry=loader_geometry(cfg))
    return collate([ds[0], ds[1]])


@pytest.mark.parametrize("head_norm, head", [(False, "linear"), (True, "bn_linear")])
def test_official_layout_converts_back_to_the_same_model(tmp_path, head_norm, head):
    cfg = load_config(None, [*WI, f"model.waffleiron.head_norm={str(head_norm).lower()}"])
    model = randomised(build_model(cfg, 19))
    official = official_layout(model, head)
    torch.save({"epoch": 1, "net": {f"module.{k}": v for k, v in official.items()}}, tmp_path / "ckpt.pth")
    assert set(read_official(tmp_path / "ckpt.pth", "waffleiron")) == set(official)
    convert("waffleiron", tmp_path / "ckpt.pth", cfg, tmp_path / "ours.pt")
    again = build_model(cfg, 19).eval()
    again.load_trainable_state_dict(load_checkpoint(tmp_path / "ours.pt")["model"])
    batch = batch_of(cfg)
    with torch.no_grad():
        assert torch.equal(again(batch)["logits"], model(batch)["logits"])


def test_what_does_not_map_is_refused_by_name(tmp_path):
    cfg = load_config(None, [*WI, "model.waffleiron.head_norm=false"])
    model = randomised(build_model(cfg, 19))
    official = official_layout(model, "linear")
    with pytest.raises(CheckpointError, match="depth 3, width 16; the config has model.waffleiron.depth 4"):
        waffleiron_state(official, model, load_config(None, [*WI, "model.waffleiron.depth=4"]), "x.pth", "waffleiron")
    with pytest.raises(CheckpointError, match="norm=batch"):
        waffleiron_state(official, model, load_config(None, [*WI, "model.waffleiron.norm=layer"]), "x.pth", "waffleiron")
    with pytest.raises(CheckpointError, match="head_norm=false"):
        waffleiron_state(official, build_model(load_config(None, WI), 19), load_config(None, WI), "x.pth", "waffleiron")
    with pytest.raises(CheckpointError, match=r"do not map onto this model: \['compressed.weight'\]"):
        waffleiron_state({**official, "compressed.weight": torch.zeros(1)}, model, cfg, "x.pth", "waffleiron")
    with pytest.raises(CheckpointError, match="'embed.final.bias' is missing"):
        waffleiron_state({k: v for k, v in official.items() if k != "embed.final.bias"}, model, cfg, "x.pth", "waffleiron")
    with pytest.raises(CheckpointError, match="does not fit our 'head.1.weight'"):
        waffleiron_state(official, build_model(cfg, 7), cfg, "x.pth", "waffleiron")  # 19 classes into 7
    # the CLI: one line naming the problem, exit 2
    torch.save({"net": official}, tmp_path / "ckpt.pth")
    assert main(["convert", "--from", "rangevit", str(tmp_path / "ckpt.pth"), "--config", str(REPO / "config/synthetic/tiny.yaml"),
                 "--out", str(tmp_path / "o.pt"), *WI]) == 2
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert main(["convert", "--from", "waffleiron", str(tmp_path / "junk.pth"), "--config",
                 str(REPO / "config/synthetic/tiny.yaml"), "--out", str(tmp_path / "o.pt"), *WI]) == 2
    assert not (tmp_path / "o.pt").exists()


def test_a_distilled_scalr_backbone_converts_with_an_untrained_head(tmp_path, caplog):
    cfg = load_config(None, [*WI, "model.waffleiron.head_norm=true"])
    model = randomised(build_model(cfg, 19))
    torch.save({"model_point": official_layout(model, "distill")}, tmp_path / "pre.pth")
    with pytest.raises(ConfigError, match="converts to a 'waffleiron' model"):
        convert("scalr", tmp_path / "pre.pth", load_config(None), tmp_path / "o.pt")
    convert("scalr", tmp_path / "pre.pth", cfg, tmp_path / "pre.pt")
    state = load_checkpoint(tmp_path / "pre.pt")["model"]
    assert "distillation head" in caplog.text
    assert torch.equal(state["layers.2.channel.fc2.weight"], model.state_dict()["layers.2.channel.fc2.weight"])
    assert (state["head.1.weight"] == 0).all()  # the segmentation head stays untrained (zero-initialised)


def test_rangevit_checkpoints_without_stored_kernel_points_still_load(tmp_path):
    cfg = load_config(REPO / "config/synthetic/rangevit_tiny.yaml")
    model = build_model(cfg, 19)
    save_checkpoint(tmp_path / "new.pt", model=model, step=1, config={"model": {"name": "rangevit"}})
    state = load_checkpoint(tmp_path / "new.pt")
    assert torch.equal(state["model"]["refiner.kernel"], model.refiner.kernel)
    old = {k: v for k, v in state["model"].items() if k != "refiner.kernel"}  # written before the kernel was stored
    again = build_model(cfg, 19)
    again.load_trainable_state_dict(old)
    assert torch.equal(again.refiner.kernel, model.refiner.kernel)
    with pytest.raises(CheckpointError, match="official_layers=true"):
        convert("rangevit", tmp_path / "new.pt", cfg, tmp_path / "o.pt")
