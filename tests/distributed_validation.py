"""Run under `torchrun --nproc_per_node=2` by tests/test_registry.py: every task of TINY_TASKS trains one
step and validates on two processes, while every torch.distributed collective is recorded with the file
that called it. Writes <out>/rank<r>.json: {"metrics": {task: metrics}, "callers": [files]}.

    torchrun --standalone --nproc_per_node=2 tests/distributed_validation.py DATA_ROOT OUT_DIR
"""

from __future__ import annotations

import inspect
import json
import sys
import warnings
from pathlib import Path

import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))

COLLECTIVES = ("all_reduce", "all_gather", "all_gather_object", "all_gather_into_tensor", "broadcast",
               "broadcast_object_list", "reduce", "reduce_scatter", "all_to_all", "gather", "gather_object",
               "scatter", "scatter_object_list")
callers: list[str] = []


def recorded(fn):
    def wrapper(*args, **kwargs):
        callers.append(inspect.stack()[1].filename)
        return fn(*args, **kwargs)
    return wrapper


for name in COLLECTIVES:
    setattr(dist, name, recorded(getattr(dist, name)))


def main(root: str, out: str) -> None:
    from balvit.engine import dist as D
    from balvit.engine.trainer import Trainer
    from conftest import TINY_TASKS, config_of

    info = D.init_distributed("cpu")
    work = Path(out)
    metrics = {}
    for task in sorted(TINY_TASKS, key=lambda t: t == "elite_student"):
        path, overrides = TINY_TASKS[task]
        more = ["train.steps=1", "train.save_every=1", "data.max_val_frames=3", "data.num_workers=0"]
        if task == "elite_student":
            more.append(f"elite.teacher_checkpoint={work / 'elite_teacher' / 'last.pt'}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = Trainer(config_of(path, root, *overrides, *more), work / task, info, progress=False)
            metrics[task] = trainer.fit()
    (work / f"rank{info.rank}.json").write_text(json.dumps({"metrics": metrics, "callers": sorted(set(callers))}))
    D.cleanup()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
