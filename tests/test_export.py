"""ONNX export (balvit/export.py, `balvit export`): onnxruntime gives the logits of the PyTorch inference
path within 1e-4 on generated scans of several sizes, for every exportable model; the others are
refused with the reason."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import balvit
from balvit.api import ArrayScans
from balvit.cli import main as balvit_main
from balvit.data.dataset import build_reader
from balvit.engine.evaluate import PerFrame
from balvit.errors import ConfigError
from balvit.export import EXPORTABLE, NOT_EXPORTABLE, graph_inputs
from balvit.models import MODELS
from conftest import generated_dataset, tiny_model_config
from test_api import perturbed_checkpoint

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return generated_dataset(tmp_path_factory, "export", frames=2, image_scale=0.1, seed=4)


def test_every_model_is_exportable_or_says_why():
    assert set(EXPORTABLE) | set(NOT_EXPORTABLE) == set(MODELS) and not set(EXPORTABLE) & set(NOT_EXPORTABLE)


# every exportable model; BALViT also with BEV levels (18 x 9 x 5 azimuth cells) that do not divide the
# polar grid (72): its cell references pool over uneven windows (F.adaptive_avg_pool2d, window_sums)
CASES = [(name, []) for name in EXPORTABLE] + [("balvit", ["data.bev.azimuth_bins=72"])]


@pytest.mark.parametrize("name,overrides", CASES, ids=[n + ("-uneven-bev" if o else "") for n, o in CASES])
def test_onnxruntime_equals_pytorch(name, overrides, syn, tmp_path, capsys):
    ck = perturbed_checkpoint(tiny_model_config(name, syn, *overrides), tmp_path / "ck.pt", seed=3)
    out = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert balvit_main(["export", "--checkpoint", str(ck), "--format", "onnx", "--out", str(out)]) == 0
    assert "max |difference|" in capsys.readouterr().out
    model = balvit.load(ck, device="cpu", batch_size=1)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names == list(graph_inputs(name, model.config))
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["balvit.class_names"]) == list(model.class_names) and meta["balvit.model"] == name

    reader = build_reader(model.config.data, "valid")  # the generated scans (2 frames of sequence 08)
    want = {}
    model.run(reader, [PerFrame(lambda item: want.__setitem__(item["index"], item["logits"].numpy()))])
    sizes = set()
    for i in range(len(reader)):
        points = reader.load_points(i)
        got = session.run(None, model.onnx_inputs(points))[0]
        assert got.shape == (len(points), 19)
        np.testing.assert_allclose(got, want[i], atol=1e-4, rtol=0)
        assert want[i].std() > 0.05  # a model whose logits vary, not a zero head
        sizes.add(len(points))
    half = reader.load_points(0)[::2]  # another point count through the same graph
    got = session.run(None, model.onnx_inputs(half))[0]
    np.testing.assert_allclose(got, _logits(model, half), atol=1e-4, rtol=0)
    assert len(sizes | {len(half)}) >= 2


def _logits(model, points):
    out = []
    model.run(ArrayScans([points], model.labels), [PerFrame(lambda item: out.append(item["logits"].numpy()))])
    return out[0]


def test_refusals(syn, tmp_path, capsys):
    ck = perturbed_checkpoint(tiny_model_config("elite_teacher", syn), tmp_path / "teacher.pt")
    capsys.readouterr()  # building the checkpoint logged its backbone
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert balvit_main(["export", "--checkpoint", str(ck), "--out", str(tmp_path / "t.onnx")]) == 2
    err = capsys.readouterr().err
    assert "cannot be exported to ONNX" in err and "camera images" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t.onnx").exists()
    # neighbours the model would search itself (scipy) cannot be part of a graph
    for name, override in (("rangevit", "data.sampling.neighbors=0"), ("waffleiron", "data.sampling.neighbors=0")):
        with pytest.raises(ConfigError, match="must come from the loader"):
            graph_inputs(name, tiny_model_config(name, syn, override))


def test_op_mappings_are_exact_on_two_threads(tmp_path):
    """The three op mappings of export.py against PyTorch, on onnxruntime with 2 intra-op threads and many
    repeated indices: index_add (ScatterND's add reduction would lose updates here), scatter_reduce amax
    without self (negative values; empty cells keep the input's value), hypot."""
    import torch

    from balvit.export import register_symbolics

    class Ops(torch.nn.Module):
        def forward(self, src, index, xy):
            added = torch.zeros(300, src.shape[1]).index_add(0, index, src)
            base = torch.full((400, src.shape[1]), 7.0)  # cells 300..399 get no point: they keep 7
            amax = base.scatter_reduce(0, index[:, None].expand_as(src), src - 3.0, reduce="amax", include_self=False)
            return added, amax, torch.hypot(xy[:, 0], xy[:, 1])

    g = torch.Generator().manual_seed(0)
    src = torch.randn(60_000, 64, generator=g)
    index = torch.randint(0, 300, (60_000,), generator=g)
    xy = torch.randn(1000, 2, generator=g) * 30
    register_symbolics()
    path = tmp_path / "ops.onnx"
    torch.onnx.export(Ops(), (src, index, xy), str(path), dynamo=False, opset_version=18,
                      input_names=["src", "index", "xy"], dynamic_axes={"src": {0: "n"}, "index": {0: "n"}})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    want = [t.numpy() for t in Ops()(src, index, xy)]
    for _ in range(3):  # a race would show as run-to-run differences
        got = session.run(None, {"src": src.numpy(), "index": index.numpy(), "xy": xy.numpy()})
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, atol=2e-4, rtol=1e-5)
    assert (got[1][300:] == 7.0).all() and (got[1][:300] < 2).all()
