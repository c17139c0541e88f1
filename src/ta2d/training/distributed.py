"""The rank side of data-parallel training (run key ``gpus``): the process group and each rank's batches.

``train_run`` (ta2d.training.loop) uses these whether or not it runs under torchrun; outside a process
group they are the one-process identities. ta2d.training.launch starts the ranks. Under torchrun each
rank

* reads only its share of every batch: ``RankBatches`` takes the plan of each global batch
  (``ChunkBatches.plan()``, the same on every rank since it depends only on seed and epoch) and keeps the
  rank's contiguous slice (``share``) before gathering it (resident copy or memory-mapped chunks);
* sums the training and validation squared errors and counts across ranks (``all_sum``) and takes
  once-per-run results from rank 0 (``from_main``).

``batch_size`` stays the global batch, so a run's loss trajectory does not depend on ``gpus``
(tests/training/test_distributed.py: 2 CPU processes equal 1 to floating-point tolerance).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from ta2d.chunks.loader import ChunkBatches


# ---- the process group ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Context:
    """This process's place in the data-parallel run (rank 0 of 1 when there is none)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes checkpoints, metrics and the log."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def context() -> Context:
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return Context()


def all_sum(values: Sequence[float | torch.Tensor], device: torch.device) -> list[float]:
    """The sums of ``values`` over all ranks (float64, one all-reduce); the values themselves without DDP."""
    t = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(()) for v in values])
    if context().active:
        dist.all_reduce(t)
    return t.tolist()


def from_main(compute: Callable[[], object]) -> object:
    """``compute()`` on rank 0 only, its result broadcast to every rank (e.g. the data fingerprint, which
    reads every chunk: once per run, not once per rank)."""
    if not context().active:
        return compute()
    box = [compute() if context().main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if context().active:
        dist.barrier()


def share(n: int, rank: int, world: int) -> tuple[int, int]:
    """[lo, hi) of rank's contiguous share of a batch of n samples (sizes differ by at most one)."""
    return n * rank // world, n * (rank + 1) // world


def global_batch_size(k: int, batch_size: int, n_samples: int) -> int:
    """Samples in batch k of an epoch (ChunkBatches: every batch is full but the last)."""
    return min(batch_size, n_samples - k * batch_size)


# ---- a rank's share of every batch ------------------------------------------------------------------
class RankBatches(IterableDataset):
    """Rank ``rank`` of ``world``'s share of every batch of ``batches`` (a ChunkBatches), batch for batch.

    Every rank computes the same plan (file ids, sample indices) per batch and keeps its contiguous slice,
    so the ranks' shares partition each global batch and a rank reads only its own samples, through the
    loader's own ``gather``: from its resident copy when the training set fits the memory budget, else one
    slice or gather per field and file from the memory-mapped chunks. Every rank holds its own resident
    copy, so train_run gives each rank's loader 1 / world of the budget. ``pad_empty``:
    a rank whose share is empty gets the batch's first sample instead (training: the loop weights it 0);
    otherwise an empty batch.
    With loader workers, worker w of n serves batches w, w + n, ... like ChunkBatches.
    """

    def __init__(self, batches: ChunkBatches, rank: int, world: int, pad_empty: bool = False):
        self.batches, self.rank, self.world, self.pad_empty = batches, int(rank), int(world), pad_empty

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    @property
    def n_samples(self) -> int:
        """Samples of the whole epoch (all ranks)."""
        return self.batches.n_samples

    @property
    def batch_size(self) -> int:
        return self.batches.batch_size

    def __len__(self) -> int:
        return len(self.batches)

    def plan(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(file ids, sample indices) of this rank's share of each batch."""
        for k, (f, i) in enumerate(self.batches.plan()):
            if len(f) != global_batch_size(k, self.batch_size, self.n_samples):  # the loop's loss weights assume it
                raise RuntimeError(f"batch {k} holds {len(f)} samples: only the last batch of an epoch may be short")
            lo, hi = share(len(f), self.rank, self.world)
            if lo == hi and self.pad_empty:
                lo, hi = 0, 1
            yield f[lo:hi], i[lo:hi]

    def prepare(self) -> None:
        self.batches.prepare()

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        cache: OrderedDict = OrderedDict()
        for k, (f, i) in enumerate(self.plan()):
            if k % nw == wid:
                yield self.batches.gather(f, i, cache)
