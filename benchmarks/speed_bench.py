"""Speed and memory of every model side by side, at SemanticKITTI and nuScenes resolution.

    python benchmarks/speed_bench.py [--device cpu|cuda] [--repeats 5] [--resolutions kitti,nuscenes]
                                     [--models balvit,rangevit,...] [--train-batch 2] [--amp] [--quick]

Models (benchmarks/common.py MODELS, each with its own full-size config): BALViT (frozen DINOv2
ViT-S/14), BALViT with a randomly initialised frozen ViT (same network, same cost), RangeViT (also
MultiViT's LiDAR branch), WaffleIron from scratch, ScaLR's WaffleIron (WI-48-768), ELiTe student.
Data: synthetic scans (no download) of a SemanticKITTI-format HDL-64E (64 x 2048 range image,
~120 k points) and a nuScenes-format HDL-32E (32 x 1024, ~30 k points), or real roots
(--kitti-data / --nuscenes-data).

Per model and resolution, each in a fresh process (so that peak memory is its own):
  - inference: batch 1, one scan, no grad -> s/scan and scans/s;
  - training: forward + backward + AdamW step on a batch of --train-batch training samples as the
    config trains (its crops / point sampling);
  - peak memory (process RSS; CUDA: max allocated), trainable and total parameters.
Every time is the median of --repeats runs after a warm-up run; ratios to BALViT compare figures of
the same invocation. --quick: test-size models on a tiny generated dataset, 1 repeat, measured in
this process (a smoke test: its peak memory is the process's, not the model's).
Results: benchmarks/out/speed_bench.json (--out).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (OUT, dataset_overrides, fmt_cell, load_bench_config, machine, machine_line,  # noqa: E402
                    md_table, measure_model, model_table, run_child, synthetic_data, write_json)

RESOLUTIONS = {"kitti": "semantickitti", "nuscenes": "nuscenes"}


def model_config(entry, resolution: str, root: str | Path, quick: bool):
    """The config of one MODELS entry pointed at `root` of `resolution`."""
    name, kitti_cfg, nus_cfg, extra, _ = entry
    dataset = RESOLUTIONS[resolution]
    if dataset == "nuscenes" and nus_cfg:
        overrides = dataset_overrides(dataset, root)[:2]  # its own nuScenes data section
    else:
        size = (16, 256) if quick else (None, None)
        overrides = dataset_overrides(dataset, root, *size)
    return load_bench_config(nus_cfg if (dataset == "nuscenes" and nus_cfg) else kitti_cfg, [*overrides, *extra])


def prepare_data(args) -> dict[str, str]:
    tmp = Path(tempfile.gettempdir())
    roots = {}
    for res in args.resolutions:
        given = args.kitti_data if res == "kitti" else args.nuscenes_data
        if given:
            roots[res] = given
        elif args.quick:
            roots[res] = str(synthetic_data(RESOLUTIONS[res], tmp / f"balvit_bench_quick_{res}", frames=1, beams=16, azimuth_steps=256))
        else:
            roots[res] = str(synthetic_data(RESOLUTIONS[res], tmp / f"balvit_bench_{res}", frames=2))
    return roots


def child(args) -> dict:
    entry = model_table(args.quick, [args.model])[0]
    cfg = model_config(entry, args.resolution, args.root, args.quick)
    return measure_model(cfg, args.mode, torch.device(args.device), args.repeats, warmup=args.warmup, amp=args.amp,
                         train_batch=args.train_batch)


def measure(args, entry, res: str, root: str, mode: str) -> dict:
    """One measurement: in a fresh process (default) or in this one (--quick / --inprocess)."""
    try:
        if args.quick or args.inprocess:
            cfg = model_config(entry, res, root, args.quick)
            return measure_model(cfg, mode, torch.device(args.device), args.repeats, warmup=args.warmup,
                                 amp=args.amp, train_batch=args.train_batch)
        flags = ["--child", mode, "--model", entry[0], "--resolution", res, "--root", root, "--device", args.device,
                 "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--train-batch", str(args.train_batch),
                 *(["--amp"] if args.amp else [])]
        return run_child(Path(__file__), flags, timeout=args.timeout)
    except Exception as e:  # noqa: BLE001 - one failing model (e.g. out of memory) must not lose the others
        return {"error": f"{type(e).__name__}: {str(e)[-500:]}"}


def summarize(raw: dict, models: list) -> dict:
    """Rows per resolution: the measurements of each model and its ratios to BALViT's."""
    rows: dict[str, list[dict]] = {}
    for res, per_model in raw.items():
        base = per_model.get("balvit", {})
        out = []
        for name, _, _, _, note in models:
            if name not in per_model:
                continue
            inf, tr = per_model[name].get("model", {}), per_model[name].get("train", {})
            row = {"model": name, "note": note, "points": inf.get("points"), "range_image": inf.get("image"),
                   "infer_s": inf.get("seconds"), "train_step_s": tr.get("seconds"),
                   "train_batch": tr.get("image"), "train_points": tr.get("points"),
                   "infer_peak_rss_mb": inf.get("peak_rss_mb"), "train_peak_rss_mb": tr.get("peak_rss_mb"),
                   "infer_peak_gpu_mb": inf.get("peak_gpu_mb"), "train_peak_gpu_mb": tr.get("peak_gpu_mb"),
                   "trainable_params": (inf.get("params") or tr.get("params") or {}).get("trainable"),
                   "total_params": (inf.get("params") or tr.get("params") or {}).get("total"),
                   "errors": {m: v["error"] for m, v in per_model[name].items() if "error" in v}}
            row["scans_per_s"] = 1.0 / row["infer_s"] if row["infer_s"] else None
            for key, ref in (("infer_s", base.get("model", {}).get("seconds")), ("train_step_s", base.get("train", {}).get("seconds"))):
                row[f"{key}_vs_balvit"] = row[key] / ref if (row[key] and ref) else None
            out.append(row)
        rows[res] = out
    return rows


def markdown(d: dict) -> str:
    """The RESULTS.md section of a speed_bench.json."""
    m = d["machine"]
    lines = ["## Speed and memory of every model", "",
             f"Machine: {machine_line(m)}; device `{d['device']}`{' (bf16 autocast)' if d.get('amp') else ''}. "
             f"Median of {d['repeats']} runs after {d['warmup']} warm-up run(s), each model in a fresh process; "
             f"ratios are to BALViT in the same invocation.{' QUICK smoke run (test-size models): not a measurement.' if d.get('quick') else ''}",
             ""]
    gpu = d["device"] == "cuda"
    for res, rows in d["rows"].items():
        if not rows:
            continue
        r0 = rows[0]
        lines += [f"### {'SemanticKITTI' if res == 'kitti' else 'nuScenes'} resolution "
                  f"(range image {'x'.join(map(str, (r0['range_image'] or [0, 0, 0, 0])[2:]))}, {fmt_cell(r0['points'])} points per scan)", ""]
        header = ["model", "scans/s", "inference s/scan", "vs BALViT", f"train step s (batch {d['train_batch']})", "vs BALViT",
                  "peak MB inference", "peak MB training", "trainable params", "total params"]
        if gpu:
            header[6:8] = ["peak GPU MB inference", "peak GPU MB training"]
        body = []
        for r in rows:
            mem = ("infer_peak_gpu_mb", "train_peak_gpu_mb") if gpu else ("infer_peak_rss_mb", "train_peak_rss_mb")
            body.append([r["model"], r["scans_per_s"], r["infer_s"], r["infer_s_vs_balvit"], r["train_step_s"],
                         r["train_step_s_vs_balvit"], r[mem[0]], r[mem[1]], r["trainable_params"], r["total_params"]])
        lines += [md_table(header, body), ""]
        notes = [f"- `{r['model']}`: {r['note']}" + (f"; FAILED: {r['errors']}" if r["errors"] else "") for r in rows]
        lines += notes + [""]
    lines += ["MultiViT's LiDAR branch is RangeViT (same network and cost); its camera branch is used in training only.", ""]
    return "\n".join(lines)


def write_result(args, roots: dict, raw: dict[str, dict], models: list) -> dict:
    """The JSON of everything measured so far (the rows of the (resolution, model) pairs done)."""
    result = {"machine": machine(), "device": args.device, "amp": args.amp, "repeats": args.repeats,
              "warmup": args.warmup, "train_batch": args.train_batch, "quick": args.quick, "data": roots,
              "rows": summarize(raw, models), "raw": raw}
    write_json(Path(args.out), result)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--resolutions", default="kitti,nuscenes")
    p.add_argument("--models", default="", help="comma-separated subset of the model names (default: all)")
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    p.add_argument("--kitti-data", default=None, help="SemanticKITTI root with sequence 08 (default: synthetic)")
    p.add_argument("--nuscenes-data", default=None, help="nuScenes root (default: synthetic)")
    p.add_argument("--quick", action="store_true", help="test-size models, tiny data, 1 repeat, in this process")
    p.add_argument("--inprocess", action="store_true", help="measure in this process (peak memory is cumulative)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per child measurement")
    p.add_argument("--out", default=str(OUT / "speed_bench.json"))
    # child mode (internal)
    p.add_argument("--child", dest="mode", default=None, choices=["model", "train"])
    p.add_argument("--model", default=None)
    p.add_argument("--resolution", default=None, choices=list(RESOLUTIONS))
    p.add_argument("--root", default=None)
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device on this machine")
    if args.mode:
        print(json.dumps(child(args)))
        return
    if args.quick:
        args.repeats, args.warmup = 1, 1
    args.resolutions = [r.strip() for r in args.resolutions.split(",") if r.strip()]
    bad = [r for r in args.resolutions if r not in RESOLUTIONS]
    if bad:
        raise SystemExit(f"unknown resolution(s) {bad}; choose from {list(RESOLUTIONS)}")
    models = model_table(args.quick, [m.strip() for m in args.models.split(",") if m.strip()] or None)
    roots = prepare_data(args)
    if args.quick:
        torch.set_num_threads(1)
    raw: dict[str, dict] = {}
    for res in args.resolutions:
        raw[res] = {}
        for entry in models:
            raw[res][entry[0]] = {mode: measure(args, entry, res, roots[res], mode) for mode in ("model", "train")}
            inf, tr = raw[res][entry[0]]["model"], raw[res][entry[0]]["train"]
            print(f"{res:8s} {entry[0]:14s} inference {fmt_cell(inf.get('seconds'))} s  train step "
                  f"{fmt_cell(tr.get('seconds'))} s  {inf.get('error') or tr.get('error') or ''}", flush=True)
            write_result(args, roots, raw, models)  # after every model: an interrupted run keeps what it measured
    result = write_result(args, roots, raw, models)
    print(markdown(result))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
