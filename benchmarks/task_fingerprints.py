"""Behaviour fingerprints of every task: short seeded runs on one tiny generated dataset.

For refactors that must not change results: run it before (`--out before.json`) and after
(`--out after.json --compare before.json`). Each entry trains a tiny config for a few steps through
the `balvit` command line (the interface every refactor keeps), then records the training losses of
every step, the validation metrics the run wrote, a sha256 of the trained weights in last.pt and,
for models that predict points, the confusion matrix of `balvit eval` on the validation split.
`--compare` prints every difference and exits 1 if there is one.

    python benchmarks/task_fingerprints.py --out /tmp/before.json
    python benchmarks/task_fingerprints.py --out /tmp/after.json --compare /tmp/before.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SYN = REPO / "config" / "synthetic"
sys.path.insert(0, str(REPO / "tests"))
from conftest import SMALL_STUDENT, TINY_DINO  # noqa: E402  (the tests' tiny ELiTe settings)
COMMON = ["train.steps=3", "train.save_every=3", "train.log_every=1", "train.eval_every=0", "eval.pictures=0",
          "data.num_workers=0", "data.max_val_frames=2"]

# name -> (config, overrides, evaluate with `balvit eval`)
RUNS: dict[str, tuple[Path, list[str], bool]] = {
    "segmentation_balvit": (SYN / "tiny.yaml", [], True),
    "segmentation_rangevit": (SYN / "rangevit_tiny.yaml", [], True),
    "segmentation_multivit": (SYN / "multivit_tiny.yaml", ["task=segmentation", "data.cameras=false"], True),
    "segmentation_waffleiron": (SYN / "scalr_tiny.yaml", ["task=segmentation", "data.cameras=false"], True),
    "distill": (SYN / "scalr_tiny.yaml", [], False),
    "multivit_camera": (SYN / "multivit_tiny.yaml", [], False),
    "multivit_joint": (SYN / "multivit_tiny.yaml", ["task=multivit_joint"], True),
    "elite_teacher": (SYN / "elite_teacher.yaml", TINY_DINO, False),
    "segmentation_elite_student": (SYN / "elite_student.yaml", ["task=segmentation", *SMALL_STUDENT], True),
    "elite_student": (SYN / "elite_student.yaml", [*SMALL_STUDENT, *TINY_DINO], True),  # + teacher_checkpoint
}


def balvit(*args: str, cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "balvit.cli", *args, "--no-progress"], cwd=cwd, env=env,
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"balvit {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def weights_sha256(path: Path) -> str:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=False)["model"]
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fingerprint(name: str, cfg: Path, overrides: list[str], evaluate: bool, data: Path, work: Path) -> dict:
    run = work / name
    more = list(overrides)
    if name == "elite_student":
        more.append(f"elite.teacher_checkpoint={work / 'elite_teacher' / 'last.pt'}")
    balvit("train", str(cfg), "--data_root", str(data), "--save_path", str(run), *COMMON, *more, cwd=work)
    out: dict = {"losses": [], "val": json.loads((run / "val_metrics.json").read_text())}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out["losses"].append({k: v for k, v in rec.items() if k.startswith("train/") and k != "train/scans_per_s"})
    out["weights_sha256"] = weights_sha256(run / "last.pt")
    if evaluate:
        ev = run / "eval"
        balvit("eval", str(cfg), "--data_root", str(data), "--checkpoint", str(run / "last.pt"), "--save_path",
               str(ev), *COMMON, *more, cwd=work)
        out["confusion"] = json.loads((ev / "confusion.json").read_text())["rows_gt_cols_pred"]
        out["miou"] = json.loads((ev / "metrics.json").read_text())["miou"]
    return out


def compare(a: dict, b: dict, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in compare(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in compare(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} -> {b!r}"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--compare", type=Path, default=None, help="an earlier --out file to compare with")
    p.add_argument("--only", nargs="*", default=None, help="run only these entries")
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data"
        balvit("generate", "--format", "semantickitti", "--out", str(data), "--sequences", "00,08", "--frames", "3",
               "--seed", "2", "--beams", "16", "--azimuth-steps", "256", "--image-scale", "0.3", cwd=work)
        for name, (cfg, overrides, evaluate) in RUNS.items():
            if args.only and name not in args.only and not (name == "elite_teacher" and "elite_student" in args.only):
                continue
            print(f"{name} ...", flush=True)
            results[name] = fingerprint(name, cfg, overrides, evaluate, data, work)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    if args.compare:
        diffs = compare(json.loads(args.compare.read_text()), results)
        for d in diffs:
            print(d)
        print(f"{len(diffs)} differences" if diffs else "identical")
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
