"""torchrun-only distributed setup, and every cross-rank communication of the toolkit.

Rank and world size come from the environment (torchrun); one process without torchrun takes the
same code path with world size 1. On GPUs the process group serves both CUDA and CPU tensors
("cuda:nccl,cpu:gloo": NCCL alone reduces only CUDA tensors), on CPUs it is gloo. Evaluation shards
frames as range(rank, n, world) - every scan exactly once, no padding - and sums its evaluators'
states with `all_reduce_sum`; the trainer gathers RNG states and agrees on stopping through
`all_gather_object` / `any_rank`. Nothing else in the package calls torch.distributed collectives
(tests/test_distributed.py checks it).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Read RANK / WORLD_SIZE / LOCAL_RANK (set by torchrun) and start the process group if > 1."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(BACKEND_CUDA if use_cuda else "gloo", timeout=timedelta(minutes=30))
    return DistInfo(rank, world, local, dev)


BACKEND_CUDA = "cuda:nccl,cpu:gloo"  # NCCL for CUDA tensors, gloo for CPU tensors, in one group


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def reduce_device() -> torch.device:
    """Where collectives run: the CPU whenever the process group has a CPU backend (gloo), else the
    current CUDA device (a pure NCCL group set up elsewhere). The same on every rank, so that all
    ranks always use the same backend for one collective."""
    backend = str(dist.get_backend()) if _active() else "gloo"
    return torch.device("cpu") if ("gloo" in backend or "mpi" in backend) else torch.device("cuda", torch.cuda.current_device())


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of `t` over all ranks (`t` itself in a single process), on `t`'s device."""
    if not _active():
        return t
    x = t.detach().to(reduce_device(), copy=True)
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x.to(t.device)


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on at least one."""
    if not _active():
        return flag
    return bool(all_reduce_sum(torch.tensor([1 if flag else 0], dtype=torch.int64)).item())


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_gather_object(obj):
    """[obj of rank 0, obj of rank 1, ...] (just [obj] in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shard(n: int, rank: int, world: int) -> list[int]:
    """Frames of this rank for evaluation: every frame exactly once over all ranks."""
    return list(range(rank, n, world))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
