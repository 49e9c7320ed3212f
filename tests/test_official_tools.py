"""The official evaluation tools on our prediction files (run when they are available).

- SEMANTIC_KITTI_API=/path/to/semantic-kitti-api (a checkout): its evaluate_semantics.py runs unchanged
  on `balvit predict` output and reports our mIoU.
- NUSCENES_DEVKIT_PYTHON=/path/to/python (an interpreter with nuscenes-devkit installed; the devkit pins
  numpy < 2, so it lives in its own environment): its LidarSegEval gives exactly our nuScenes mIoU.
Both are skipped otherwise.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from balvit.run_config import load_config
from balvit.data.synthetic import generate
from balvit.engine.trainer import Trainer, run_eval, run_predict
from conftest import CPU, REPO

NUS = ["data.dataset=nuscenes", "data.version=v1.0-mini", "data.train_sequences=[]", "data.val_sequences=[]",
       "data.intensity_scale=0.0039", "data.range.fov_up=10", "data.range.fov_down=-30"]


def trained(tmp_path, root, extra):
    cfg = load_config(REPO / "config/synthetic/tiny.yaml", [f"data.root={root}", "train.steps=20", *extra])
    Trainer(cfg, tmp_path / "run", CPU, progress=False).fit()
    return cfg, tmp_path / "run/best.pt"


@pytest.mark.skipif(not os.environ.get("SEMANTIC_KITTI_API"), reason="set SEMANTIC_KITTI_API to a semantic-kitti-api checkout")
def test_semantic_kitti_api_reads_our_predictions(tmp_path):
    root = tmp_path / "kitti"
    generate("semantickitti", root, sequences=["00", "08"], frames=3, seed=5, beams=16, azimuth_steps=256, cameras=False, progress=False)
    cfg, ckpt = trained(tmp_path, root, [])
    ours = run_eval(cfg, ckpt, CPU, progress=False)["miou"]
    run_predict(cfg, ckpt, CPU, tmp_path / "pred", split="valid", pictures=0, progress=False)
    api = Path(os.environ["SEMANTIC_KITTI_API"])
    proc = subprocess.run(["python3", "evaluate_semantics.py", "--dataset", str(root), "--predictions", str(tmp_path / "pred"),
                           "--split", "valid"], cwd=api, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    official = float(re.search(r"IoU avg ([0-9.]+)", proc.stdout).group(1))
    assert official == pytest.approx(ours / 100, abs=6e-4)  # the api prints 3 decimals


@pytest.mark.skipif(not os.environ.get("NUSCENES_DEVKIT_PYTHON"), reason="set NUSCENES_DEVKIT_PYTHON to a python with nuscenes-devkit")
def test_nuscenes_devkit_gives_our_miou(tmp_path):
    root = tmp_path / "nus"
    generate("nuscenes", root, frames=3, version="v1.0-mini", image_scale=0.1, progress=False,
             sequences=["scene-0061", "scene-0553", "scene-0103", "scene-0916"])  # all of mini_val
    cfg, ckpt = trained(tmp_path, root, NUS)
    ours = run_eval(cfg, ckpt, CPU, progress=False)["miou"]
    run_predict(cfg, ckpt, CPU, tmp_path / "pred", split="valid", pictures=0, progress=False)
    script = (
        "import json, sys\n"
        "from nuscenes import NuScenes\n"
        "from nuscenes.eval.lidarseg.evaluate import LidarSegEval\n"
        f"nusc = NuScenes(version='v1.0-mini', dataroot='{root}', verbose=False)\n"
        f"res = LidarSegEval(nusc, '{tmp_path / 'pred'}', eval_set='mini_val', verbose=False).evaluate()\n"
        "print(json.dumps({'miou': res['miou']}))\n"
    )
    proc = subprocess.run([os.environ["NUSCENES_DEVKIT_PYTHON"], "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    official = json.loads(proc.stdout.strip().splitlines()[-1])["miou"]
    assert official * 100 == pytest.approx(ours, abs=1e-9)
