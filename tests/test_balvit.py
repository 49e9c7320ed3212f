"""BALViT on tiny configs: shapes, frozen backbone, zero-initialised injection, checkpoints."""

import pytest
import torch

from balvit.models import build_model
from balvit.tasks import SegmentationTask
from conftest import batch_of, config_of


def tiny_cfg(*overrides):
    return config_of("tiny.yaml", None, *overrides)


@pytest.mark.parametrize("train, width", [(True, 128), (False, 256)])
def test_logits_per_point_for_different_sizes_and_widths(train, width):
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = build_model(cfg, 19)
    model.train(train)
    batch = batch_of(cfg, [700, 1200, 333], train=train)
    assert batch["rv"].shape[-1] == width
    out = model(batch)
    n = batch["points"].shape[0]
    assert out["logits"].shape == (n, 19)
    assert out["aux"]["rv"].shape == (n, 19) and out["aux"]["bev"].shape == (n, 19)
    assert torch.isfinite(out["logits"]).all()


def test_frozen_backbone_gets_no_gradient_and_every_trainable_parameter_does():
    cfg = tiny_cfg("model.balvit.injector_init=0.1")
    torch.manual_seed(0)
    model = build_model(cfg, 19)
    # zero-initialised weights (deformable-attention offset/weight projections) block gradients to
    # what feeds them at step 0; perturb them, as one optimizer step would, so every path is live
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and bool((p == 0).all()):
                p.normal_(0, 0.01)
    task = SegmentationTask(model, cfg.loss)
    task.train()
    assert not model.backbone.training  # pinned in eval mode
    out = task(batch_of(cfg, [900, 800], train=True))
    out["loss"].backward()
    frozen = [(n, p) for n, p in model.named_parameters() if n.startswith("backbone.")]
    assert frozen and all(not p.requires_grad and p.grad is None for _, p in frozen)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and not any(n.startswith("backbone.") for n, _ in trainable)
    missing = [n for n, p in trainable if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_zero_injector_scale_leaves_the_frozen_vit_unchanged():
    cfg = tiny_cfg("model.balvit.injector_init=0.0")
    torch.manual_seed(0)
    model = build_model(cfg, 19).eval()
    batch = batch_of(cfg, [800, 600], train=False)
    with torch.no_grad():
        enc = model.encode(batch)
        _, tokens = model.range_tokens(batch["rv"], batch["rv_col0"])
        vit = model.backbone
        x = torch.cat([vit.prefix_tokens(2), tokens], 1)
        ref = vit.final_norm(vit.run_blocks(x, 0, vit.depth, enc["grid"]))[:, vit.num_prefix:]
    torch.testing.assert_close(enc["tokens"], ref, rtol=0, atol=1e-6)
    # and a non-zero scale does change them
    with torch.no_grad():
        for inj in model.injectors:
            inj.gamma.fill_(0.5)
        changed = model.encode(batch)["tokens"]
    assert (changed - ref).abs().max() > 1e-3


def test_trainable_state_round_trip_reproduces_logits_exactly():
    cfg = tiny_cfg("model.balvit.injector_init=0.05")
    torch.manual_seed(1)
    a = build_model(cfg, 19).eval()
    torch.manual_seed(2)
    b = build_model(cfg, 19).eval()
    batch = batch_of(cfg, [500, 700], train=False)
    with torch.no_grad():
        la = a(batch)["logits"]
        assert not torch.equal(la, b(batch)["logits"])
        state = a.trainable_state_dict()
        assert not any(k.startswith("backbone.") for k in state)
        b.load_trainable_state_dict(state)
        assert torch.equal(la, b(batch)["logits"])


def test_param_report_counts():
    cfg = tiny_cfg()
    model = build_model(cfg, 19)
    r = model.param_report()
    frozen = sum(p.numel() for p in model.backbone.parameters())
    assert r["frozen"] == frozen and r["trainable"] + r["frozen"] == r["total"] and r["trainable"] > 0
    assert f"trainable: {r['trainable']}" in model.param_report_text()


def test_crop_tokens_use_their_slice_of_the_full_width_position_embedding():
    cfg = tiny_cfg()
    model = build_model(cfg, 19)
    rv = torch.zeros(2, 6, 16, 128)
    col0 = torch.tensor([0, 64])
    with torch.no_grad():
        _, tokens = model.range_tokens(rv, col0)
        base = model.embed(rv)[1].flatten(2).transpose(1, 2)
        pos = model.backbone.grid_pos_embed(4, 32).view(4, 32, -1)
    # sample 1 starts at column 64 = token column 8
    torch.testing.assert_close(tokens[1] - base[1], pos[:, 8:24].reshape(64, -1))
    torch.testing.assert_close(tokens[0] - base[0], pos[:, 0:16].reshape(64, -1))


def vit_blocks(vit):
    return vit._hf_blocks()


def test_prior_diagnosis_options_identity_token_norm_and_lr_groups():
    """vit_blocks=identity never runs the frozen blocks (the output does not depend on their weights);
    token_norm=layernorm normalises every token over its channels with the weight initialised to
    token_scale; the lr factors group embedding / adapter / the rest (benchmarks/prior_probe.py)."""
    batch = batch_of(tiny_cfg(), [600, 500], train=False)
    outs = []
    for perturb in (False, True):
        cfg = tiny_cfg("model.balvit.vit_blocks=identity", "model.balvit.injector_init=0.1")
        torch.manual_seed(0)
        model = build_model(cfg, 19).eval()
        if perturb:  # other block weights: the identity model cannot tell
            with torch.no_grad():
                for p in vit_blocks(model.backbone).parameters():
                    p.add_(torch.randn_like(p))
        with torch.no_grad():
            outs.append(model(batch)["logits"])
    torch.testing.assert_close(outs[0], outs[1])
    cfg = tiny_cfg("model.balvit.injector_init=0.1")
    torch.manual_seed(0)
    frozen = build_model(cfg, 19).eval()
    with torch.no_grad():
        assert not torch.allclose(frozen(batch)["logits"], outs[0])  # the blocks do change the output

    cfg = tiny_cfg("model.balvit.token_norm=layernorm", "model.balvit.token_scale=0.5")
    torch.manual_seed(0)
    model = build_model(cfg, 19).eval()
    assert torch.all(model.embed.norm.weight == 0.5)
    _, tokens = model.embed(batch["rv"])  # (B, D, Ht, Wt)
    per_token = tokens.permute(0, 2, 3, 1)
    torch.testing.assert_close(per_token.mean(-1), torch.zeros_like(per_token[..., 0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_token.std(-1, unbiased=False), torch.full_like(per_token[..., 0], 0.5), atol=1e-3, rtol=0)
    assert model.lr_scales() == {}  # all factors 1: one group as before

    cfg = tiny_cfg("model.balvit.embed_lr_scale=3", "model.balvit.adapter_lr_scale=2", "model.balvit.head_lr_scale=0.5")
    model = build_model(cfg, 19)
    scales = model.lr_scales()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(scales) == trainable
    assert scales["embed.proj.weight"] == 3 and scales["injectors.0.gamma"] == 2 and scales["level_embed"] == 2
    assert scales["head.mlp.0.weight" if "head.mlp.0.weight" in scales else next(n for n in scales if n.startswith("head."))] == 0.5
    assert scales[next(n for n in scales if n.startswith("bev."))] == 0.5
    from balvit.engine.optim import build_optimizer

    opt = build_optimizer(SegmentationTask(model, cfg.loss), cfg.train)
    assert sorted({round(g["lr"] / cfg.train.lr, 6) for g in opt.param_groups}) == [0.5, 2.0, 3.0]
