"""ELiTe student speed at full SemanticKITTI resolution, next to BALViT.

    python benchmarks/student_bench.py [--device cpu|cuda] [--repeats 5] [--amp] [--config config/baselines/elite_kitti_student.yaml]

Measures on one full 64 x 2048 synthetic SemanticKITTI-format scan (~120 k points, no download):
  - the student's forward pass alone (batch 1, eval mode: the final head only), median of
    `--repeats` runs after a warm-up -> scans/s;
  - the whole inference path per scan: reading the scan, the range-view projection (the dataset
    sample), batching and the forward pass -> scans/s;
  - a training step (forward + backward + AdamW, batch 2, no teacher) for reference.
BALViT's figure comes from benchmarks/out/model_bench.json when `model_bench.py` has been run on
this machine (`--balvit-seconds` overrides it). Results: benchmarks/out/student_bench.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, REPO, machine, median_time, peak_rss_mb, synthetic_kitti, write_json  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--config", default=str(REPO / "config/baselines/elite_kitti_student.yaml"))
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    p.add_argument("--data", default=None, help="SemanticKITTI-format root with sequence 08 (default: synthetic)")
    p.add_argument("--balvit-seconds", type=float, default=None, help="BALViT latency to compare with (s/scan)")
    p.add_argument("--out", default=str(OUT / "student_bench.json"))
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()

    from balvit.run_config import load_config
    from balvit.data.dataset import SegmentationDataset, build_reader, collate, to_device
    from balvit.models import build_model
    from balvit.tasks import SegmentationTask

    data = args.data or str(synthetic_kitti(Path(tempfile.gettempdir()) / "balvit_bench_kitti"))
    device = torch.device(args.device)
    cfg = load_config(args.config, [f"data.root={data}", "data.val_sequences=['08']", "data.train_sequences=['08']",
                                    "task=segmentation", *args.overrides])
    model = build_model(cfg, 19).to(device).eval()
    reader = build_reader(cfg.data, "valid")
    ds = SegmentationDataset(reader, cfg.data, train=False)
    batch = to_device(collate([ds[0]]), device)
    use_amp = device.type == "cuda" and args.amp

    def ac():
        return torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else torch.autocast("cpu", enabled=False)

    def forward():
        with torch.no_grad(), ac():
            model(batch)

    model_s, model_times = median_time(forward, args.repeats, warmup=2, device=device)

    def pipeline():
        t = to_device(collate([ds[1 % len(ds)]]), device)
        with torch.no_grad(), ac():
            model(t)["logits"].argmax(1).cpu()

    pipe_s, _ = median_time(pipeline, max(3, args.repeats // 2), warmup=1, device=device)

    train_ds = SegmentationDataset(reader, cfg.data, train=True)
    tbatch = to_device(collate([train_ds[(i % len(train_ds), 0)] for i in range(2)]), device)
    task = SegmentationTask(model, cfg.loss).train()
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)

    def step():
        with ac():
            loss = task(tbatch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    train_s, _ = median_time(step, 3, warmup=1, device=device)

    balvit_s = args.balvit_seconds
    balvit_src = "--balvit-seconds"
    bench_json = OUT / "model_bench.json"
    if balvit_s is None and bench_json.is_file():
        ref = json.loads(bench_json.read_text())
        if ref.get("machine", {}).get("device") == args.device:
            balvit_s, balvit_src = ref["model_latency_s"], str(bench_json.relative_to(REPO))
    res = {
        "machine": machine() | {"device": args.device, "amp": use_amp},
        "config": args.config,
        "points": int(batch["points"].shape[0]), "range_image": list(batch["rv"].shape),
        "params": model.param_report()["total"],
        "model_latency_s": model_s, "model_scans_per_s": 1.0 / model_s, "model_times": model_times,
        "pipeline_latency_s": pipe_s, "pipeline_scans_per_s": 1.0 / pipe_s,
        "train_step_s": train_s, "train_batch": list(tbatch["rv"].shape),
        "peak_rss_mb": peak_rss_mb(),
        "balvit_latency_s": balvit_s, "balvit_source": balvit_src if balvit_s else None,
        "measured_at": time.strftime("%Y-%m-%d %H:%M"),
    }
    if device.type == "cuda":
        res["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    write_json(Path(args.out), res)
    print(f"device {args.device} ({res['machine'].get('gpu', res['machine']['cpu'])}), {res['machine']['threads']} threads")
    print(f"ELiTe student, {res['params']:,} parameters, one scan of {res['points']} points, range image {res['range_image']}:")
    print(f"  forward       {model_s * 1000:8.1f} ms   {1 / model_s:7.2f} scans/s")
    print(f"  scan -> pred  {pipe_s * 1000:8.1f} ms   {1 / pipe_s:7.2f} scans/s (read + project + forward)")
    print(f"  train step    {train_s * 1000:8.1f} ms   (batch {res['train_batch']})")
    if balvit_s:
        print(f"  BALViT        {balvit_s * 1000:8.1f} ms   {1 / balvit_s:7.2f} scans/s ({balvit_src}); "
              f"student {balvit_s / model_s:.1f}x faster")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
