"""RangeViT on tiny configs: trainable ViT, checkpoints with its weights, sliding-window inference,
KPConv against a naive loop, per-point sampling of the 2D map."""

import math

import pytest
import torch
import torch.nn as nn

from balvit.run_config import load_config
from balvit.models import build_model
from balvit.geometry import knn_torch
from balvit.models.kpconv import KPConv, kpconv_reference
from balvit.models.vit import FoundationViT
from balvit.models.rangevit import sliding_windows
from balvit.tasks import SegmentationTask
from conftest import REPO, batch_of, config_of


def cfg_of(*overrides):
    return config_of("rangevit_tiny.yaml", None, *overrides)


def test_trainable_backbone_option_of_the_foundation_module():
    torch.manual_seed(0)
    frozen, trainable = FoundationViT("tiny"), FoundationViT("tiny", trainable=True)
    parent = nn.Sequential(trainable)
    parent.train()
    assert trainable.training and not frozen.train().training  # the frozen one stays pinned in eval
    x = torch.randn(1, 1 + 6, 48)
    trainable.run_blocks(x, 0, 2, (2, 3)).sum().backward()
    grads = [p.grad for n, p in trainable.named_parameters() if ".layer." in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    assert not any(p.requires_grad for p in frozen.parameters())


def test_drop_path_rises_linearly_over_the_blocks_and_only_acts_in_training():
    """RangeViT's ViT (valeoai/rangevit models/rangevit.py): drop_path_rate 0.1 over torch.linspace(0,
    rate, n_layers); model.rangevit.drop_path sets it; eval mode is unchanged."""
    from balvit.models.vit import DropPath

    torch.manual_seed(0)
    plain, dropped = FoundationViT("tiny", trainable=True), FoundationViT("tiny", trainable=True)
    dropped.load_state_dict(plain.state_dict())
    dropped.set_drop_path(0.1)
    rates = [getattr(b.drop_path, "p", 0.0) for b in dropped._hf_blocks()]
    assert rates == pytest.approx(torch.linspace(0, 0.1, dropped.depth).tolist())
    assert isinstance(dropped._hf_blocks()[-1].drop_path, DropPath)
    x = torch.randn(8, 1 + 6, 48)
    plain.eval(), dropped.eval()
    assert torch.equal(plain.run_blocks(x, 0, 2, (2, 3)), dropped.run_blocks(x, 0, 2, (2, 3)))
    dropped.train()
    torch.manual_seed(1)
    a = dropped.run_blocks(x, 0, 2, (2, 3))
    torch.manual_seed(2)
    b = dropped.run_blocks(x, 0, 2, (2, 3))
    assert not torch.equal(a, b)  # stochastic in training
    with pytest.raises(ValueError, match="trainable"):
        FoundationViT("tiny").set_drop_path(0.1)
    model = build_model(cfg_of("model.rangevit.drop_path=0.1"), 19)
    assert getattr(model.backbone._hf_blocks()[-1].drop_path, "p", 0) == pytest.approx(0.1)
    assert isinstance(build_model(cfg_of(), 19).backbone._hf_blocks()[-1].drop_path, nn.Identity)  # default: off


def test_forward_backward_every_trainable_parameter_gets_a_gradient_vit_included():
    cfg = cfg_of()
    torch.manual_seed(0)
    model = build_model(cfg, 19)
    task = SegmentationTask(model, cfg.loss).train()
    batch = batch_of(cfg, [900, 700], train=True)
    assert batch["rv"].shape[-2:] == (16, 64)  # a training crop
    out = task(batch)
    assert out["logits"].shape == (batch["points"].shape[0], 19)
    out["loss"].backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("backbone.model.encoder.layer.") for n in trainable)
    missing = [n for n, p in trainable.items() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []
    # the ViT's own patch embedding is replaced by the conv stem: not trained
    unused = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert unused and all("patch_embeddings" in n for n in unused)


def test_checkpoint_state_holds_the_vit_and_round_trips_exactly():
    cfg = cfg_of()
    torch.manual_seed(0)
    a = build_model(cfg, 19)
    with torch.no_grad():  # as if trained: the ViT differs from its initialisation
        for n, p in a.named_parameters():
            if n.startswith("backbone.") and p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    state = a.trainable_state_dict()
    assert a.frozen_modules == () and a.frozen_identities() == {}
    assert any(k.startswith("backbone.model.encoder.layer.") for k in state)
    b = build_model(cfg, 19)
    b.load_trainable_state_dict(state)
    batch = batch_of(cfg, [800], train=False)
    a.eval(), b.eval()
    with torch.no_grad():
        assert torch.equal(a(batch)["logits"], b(batch)["logits"])


def test_sliding_window_starts_cover_the_width():
    assert sliding_windows(2048, 384, 256) == [0, 256, 512, 768, 1024, 1280, 1536, 1664]
    assert sliding_windows(256, 256, 32) == [0] and sliding_windows(256, 0, 0) == [0]
    for width, win, stride in [(2048, 384, 256), (1000, 96, 40), (64, 24, 24)]:
        starts = sliding_windows(width, win, stride)
        covered = torch.zeros(width, dtype=torch.bool)
        for s in starts:
            covered[s:s + win] = True
        assert covered.all() and starts[-1] + win == width


def test_window_covering_the_image_equals_full_width_inference():
    torch.manual_seed(0)
    full = build_model(cfg_of("model.rangevit.window=0", "model.rangevit.stride=0"), 19).eval()
    covering = build_model(cfg_of("model.rangevit.window=256", "model.rangevit.stride=64"), 19).eval()
    covering.load_trainable_state_dict(full.trainable_state_dict())
    batch = batch_of(cfg_of(), [900, 600], train=False)
    assert batch["rv"].shape[-1] == 256
    with torch.no_grad():
        a, b = full(batch)["logits"], covering(batch)["logits"]
        # and both equal one explicit pass of the 2D part over the whole image
        feat = full.features_2d(batch["rv"])
        c = full.head(full.refine(full.point_features(feat, batch), batch))
    assert torch.equal(a, b) and torch.allclose(a, c, atol=1e-6)


def test_sliding_window_averages_the_overlapping_windows():
    cfg = cfg_of("model.rangevit.window=96", "model.rangevit.stride=40")
    torch.manual_seed(0)
    model = build_model(cfg, 19).eval()
    batch = batch_of(cfg, [1000, 500], train=False)
    rv = batch["rv"]
    with torch.no_grad():
        got = model.sliding_features(rv)
        total = torch.zeros_like(got)
        count = torch.zeros(256)
        for s in (0, 40, 80, 120, 160):  # the last window ends at column 256
            total[..., s:s + 96] += model.features_2d(rv[..., s:s + 96])
            count[s:s + 96] += 1
        assert torch.allclose(got, total / count, atol=1e-5)
        # the per-point logits come from the averaged map
        logits = model(batch)["logits"]
        ref = model.head(model.refine(model.point_features(total / count, batch), batch))
    assert torch.allclose(logits, ref, atol=1e-4)
    model.train()  # training mode: one pass over the (crop) image, no windows
    with torch.no_grad():
        assert model(batch)["logits"].shape == logits.shape


def test_bilinear_point_sampling_reads_pixel_centres_also_in_crops():
    cfg = cfg_of()
    model = build_model(cfg, 19)
    h, w, width = 16, 64, 256  # a 64-column crop of a 256-column image starting at column 100
    feat = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(1, 2, h, w).clone()
    feat[:, 1] = torch.arange(h, dtype=torch.float32).view(h, 1)
    cols = torch.tensor([100.5, 110.5, 163.5])  # full-image columns of pixel centres
    rows = torch.tensor([0.5, 7.5, 15.5])
    yaw = (0.5 - cols / width) * 2 * math.pi
    up, down = math.radians(3.0), math.radians(-25.0)
    pitch = up - rows / h * (up - down)
    r = 10.0
    pts = torch.stack([r * torch.cos(yaw), r * torch.sin(yaw), r * torch.tan(pitch), torch.zeros(3)], 1)
    batch = {"points": pts, "offsets": torch.tensor([0, 3]), "batch": torch.zeros(3, dtype=torch.long),
             "rv_col0": torch.tensor([100])}
    got = model.point_features(feat, batch)
    assert torch.allclose(got[:, 0], cols - 100.5, atol=1e-3) and torch.allclose(got[:, 1], rows - 0.5, atol=1e-3)


def test_the_loader_gives_the_point_coordinates_and_neighbours_the_model_would_compute():
    cfg = cfg_of("data.sampling.neighbors=6")
    model = build_model(cfg, 19).eval()
    for train in (True, False):
        batch = batch_of(cfg, [700, 900], train=train)
        feat = torch.randn(2, 3, *batch["rv"].shape[-2:])
        no_coord = {k: v for k, v in batch.items() if k != "rv_coord"}
        torch.testing.assert_close(model.point_features(feat, batch), model.point_features(feat, no_coord),
                                   atol=1e-4, rtol=0)  # numpy vs torch atan2: < 1e-4 pixel
        assert batch["knn"].shape == (len(batch["points"]), 7)
        nb = model.neighbours(batch)
        assert torch.equal(nb, knn_torch(batch["points"], batch["offsets"], 7))  # the same query, in the loader
    fewer = batch_of(cfg_of("data.sampling.neighbors=3"), [700], train=False)
    assert torch.equal(model.neighbours(fewer), knn_torch(fewer["points"], fewer["offsets"], 7))  # too few: computed


def test_kpconv_equals_a_naive_loop_and_passes_gradcheck():
    torch.manual_seed(0)
    pts = torch.rand(40, 3, dtype=torch.float64) * 2.0
    nb = knn_torch(pts, torch.tensor([0, 40]), 7)
    conv = KPConv(5, 4, num_kernel_points=15, radius=0.6, extent=1.2, chunk=16).double()
    feats = torch.randn(40, 5, dtype=torch.float64)
    got = conv(pts, feats, nb)
    ref = kpconv_reference(pts, feats, nb, conv.kernel, conv.weight.detach(), 1.2)
    assert torch.allclose(got, ref, atol=1e-10)
    assert conv.kernel.shape == (15, 3) and torch.equal(conv.kernel[0], torch.zeros(3, dtype=torch.float64))
    assert (conv.kernel.norm(dim=1) <= 0.6 + 1e-9).all()
    small = KPConv(2, 2, chunk=8).double()
    f = torch.randn(12, 2, dtype=torch.float64, requires_grad=True)
    p12 = pts[:12]
    n12 = knn_torch(p12, torch.tensor([0, 12]), 7)
    assert torch.autograd.gradcheck(lambda x: small(p12, x, n12), (f,))


def test_vit_learning_rate_scale_reaches_the_optimizer():
    from balvit.engine.optim import build_optimizer

    cfg = cfg_of("model.rangevit.vit_lr_scale=0.1")
    model = build_model(cfg, 19)
    task = SegmentationTask(model, cfg.loss)
    opt = build_optimizer(task, cfg.train)
    scales = {g["lr_scale"] for g in opt.param_groups}
    assert scales == {1.0, 0.1}
    vit_params = {id(p) for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad}
    for g in opt.param_groups:
        assert all((id(p) in vit_params) == (g["lr_scale"] == 0.1) for p in g["params"])


def test_config_checks_name_the_key():
    from balvit.errors import ConfigError

    with pytest.raises(ConfigError, match="model.rangevit.window"):
        cfg_of("model.rangevit.window=60")
    with pytest.raises(ConfigError, match="model.rangevit.stride"):
        cfg_of("model.rangevit.window=64", "model.rangevit.stride=80")
    with pytest.raises(ConfigError, match="task multivit_camera needs model.name=multivit"):
        load_config(REPO / "config/synthetic/multivit_tiny.yaml", ["model.name=rangevit"])
