"""Registry-wide checks (in the manner of timm's test_models.py): every entry of MODELS and TASKS.

A new model or task that is not covered here fails `test_every_registry_entry_has_a_tiny_config`.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from balvit.cli import main as balvit_main
from balvit.config import to_dict
from balvit.data.dataset import SegmentationDataset, build_reader, collate
from balvit.engine.checkpoint import load_checkpoint, restore_model, save_checkpoint
from balvit.engine.trainer import Trainer
from balvit.models import MODELS, build_model
from balvit.tasks import TASKS
from conftest import CPU, REPO, TINY_MODELS, TINY_TASKS, config_of, generated_dataset, tiny_model_config


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return generated_dataset(tmp_path_factory, "registry", frames=2, image_scale=0.3)


def test_every_registry_entry_has_a_tiny_config():
    assert set(TINY_MODELS) == set(MODELS), "add the new model's smallest config to tests/conftest.py TINY_MODELS"
    assert set(TINY_TASKS) == set(TASKS), "add the new task's smallest config to tests/conftest.py TINY_TASKS"


def _tensors(x):
    if torch.is_tensor(x):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _tensors(v)


def _batch(cfg, root, cameras: bool):
    from dataclasses import replace

    reader = build_reader(cfg.data, "train")
    ds = SegmentationDataset(reader, replace(cfg.data, cameras=cameras), train=True, seed=0)
    return collate([ds[(0, 0)], ds[(1, 0)]])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_trains_its_trainable_parts_only_and_round_trips(name, syn, tmp_path, capsys):
    cfg = tiny_model_config(name, syn)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untrained tiny backbones say so
        model = build_model(cfg, 19).train()
    batch = _batch(cfg, syn, cameras=name == "elite_teacher")
    out = model(batch)
    n = len(batch["points"])
    assert out["logits"].shape == (n, 19) and torch.isfinite(out["logits"]).all()
    g = torch.Generator().manual_seed(0)

    def probe(t):  # a random linear read-out: non-zero gradients even where outputs start at 0
        return (t.float() * torch.randn(t.shape, generator=g)).mean()

    loss = sum(probe(t) for t in _tensors(out) if t.is_floating_point())
    if hasattr(model, "forward_camera"):  # MultiViT: the camera branch too
        images = torch.randint(0, 256, (1, 3, *cfg.model.multivit.image_size), dtype=torch.uint8)
        loss = loss + probe(model.forward_camera(images)["logits"])
    loss.backward()
    trainable = {k: p for k, p in model.named_parameters() if p.requires_grad}
    frozen = {k: p for k, p in model.named_parameters() if not p.requires_grad}
    assert trainable
    assert [k for k, p in trainable.items() if p.grad is None] == []  # every trainable parameter is reached
    assert sum(float(p.grad.abs().sum()) for p in trainable.values()) > 0
    assert all(p.grad is None for p in frozen.values())

    # trainable state round-trips through a checkpoint into a freshly built model
    save_checkpoint(tmp_path / "ck.pt", model=model, step=1, config=to_dict(cfg))
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = build_model(cfg, 19)
    restore_model(fresh, load_checkpoint(tmp_path / "ck.pt"), tmp_path / "ck.pt")
    a, b = model.trainable_state_dict(), fresh.trainable_state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the frozen weights of frozen modules (a foundation backbone) are never saved, only their identity
    frozen_module_weights = {k for k in frozen if k.split(".")[0] in model.frozen_modules}
    assert not frozen_module_weights & set(load_checkpoint(tmp_path / "ck.pt")["model"])
    assert set(load_checkpoint(tmp_path / "ck.pt")["frozen"]) == set(model.frozen_modules)

    # `balvit info` prints the counts
    path, overrides = TINY_MODELS[name]
    capsys.readouterr()
    assert balvit_main(["info", str(REPO / "config/synthetic" / path), *overrides]) == 0
    report = model.param_report()
    printed = capsys.readouterr().out
    assert f"trainable: {report['trainable']}" in printed and f"total: {report['total']}" in printed


@pytest.fixture(scope="module")
def task_runs(syn, tmp_path_factory):
    """One-step runs of every task (validation included) on the tiny generated dataset."""
    out = {}
    work = tmp_path_factory.mktemp("task_runs")
    order = sorted(TASKS, key=lambda t: t == "elite_student")  # the student needs the teacher's checkpoint
    for task in order:
        path, overrides = TINY_TASKS[task]
        more = ["train.steps=1", "train.save_every=1", "data.max_val_frames=2"]
        if task == "elite_student":
            more.append(f"elite.teacher_checkpoint={work / 'elite_teacher' / 'last.pt'}")
        cfg = config_of(path, syn, *overrides, *more)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = Trainer(cfg, work / task, CPU, progress=False)
            metrics = trainer.fit()
        out[task] = (trainer, metrics, work / task)
    return out


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_fits_one_step_and_validates(task, task_runs):
    trainer, metrics, run = task_runs[task]
    assert trainer.step == 1 and trainer.cfg.task == task
    assert isinstance(metrics["score"], float) and metrics["score"] == metrics["score"]  # not NaN
    assert metrics["score"] == pytest.approx(trainer.task.score(metrics))
    state = load_checkpoint(run / "last.pt")
    assert state["step"] == 1 and state["config"]["task"] == task
    saved = json.loads((run / "val_metrics.json").read_text())
    assert saved["score"] == pytest.approx(metrics["score"]) and "confusion" not in saved
    assert any(r.get("train/loss") is not None for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()))


def test_every_tasks_validation_under_two_processes_reduces_through_the_engine_only(syn, tmp_path):
    """Each task trains a step and validates on 2 gloo processes: both ranks get the same, all-reduced
    metrics (every validation frame counted once), and every collective a balvit module calls comes
    from engine/dist.py (so a task cannot reduce CPU tensors over NCCL behind the engine's back)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(REPO / "tests/distributed_validation.py"), str(syn), str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert set(ranks[0]["metrics"]) == set(TASKS)
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
    for task, m in ranks[0]["metrics"].items():
        frames = m.get("frames")
        assert frames in (None, 2), (task, frames)  # the 2 validation frames over 2 ranks: each once
    balvit_callers = {f for r in ranks for f in r["callers"] if "/balvit/" in f}
    assert balvit_callers == {str(REPO / "src/balvit/engine/dist.py")}
