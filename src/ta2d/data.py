"""Fast batch loader over chunk files (results/patch_pt/{split}_chunk_{key}.pt or embedding files).

Files are opened with ``torch.load(path, weights_only=True, mmap=True)``; a batch is one gather
per field and file (``tensor[idx]``, or a zero-copy slice when the indices are a contiguous run),
so there are no per-sample Python objects and no collate. The order of an epoch depends only on
(seed, epoch): ``shuffle_files`` permutes the file order, ``shuffle_within_file`` the samples, and
``mix_files`` files at a time are shuffled together (1: the seed's per-file behaviour; 0: all files,
a global shuffle). Batches run on across file boundaries; only the last batch of an epoch is short.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

CHUNK_FIELDS = ("x", "y", "time7", "loc", "landcover_onehot", "elev")


class ChunkError(ValueError):
    """A chunk (or embedding) file that cannot be used; the message names the file and what is wrong."""


def open_chunk(path: str | Path, fields: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """A chunk's tensors, memory-mapped (nothing is read until used). Raises ChunkError naming the file."""
    try:
        d = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch reports truncation / garbage as RuntimeError, pickle errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ChunkError(f"{path}: not a readable chunk file (truncated or corrupt? rebuild it): {first}") from None
    if not isinstance(d, dict):
        raise ChunkError(f"{path}: holds a {type(d).__name__}, not a dict of tensors")
    if fields is None:
        out = {k: v for k, v in d.items() if isinstance(v, torch.Tensor)}
    else:
        missing = [f for f in fields if f not in d]
        if missing:
            raise KeyError(f"{path}: missing fields {missing} (has {sorted(d)})")
        out = {f: d[f] for f in fields}
    lengths = {k: (tuple(v.shape[:1]) if isinstance(v, torch.Tensor) else type(v).__name__) for k, v in out.items()}
    if len(set(lengths.values())) > 1:  # shapes only: nothing of a memory-mapped chunk is read
        raise ChunkError(f"{path}: fields disagree on the number of samples: {lengths}")
    return out


def chunk_len(path: str | Path) -> int:
    return int(open_chunk(path, ["y"])["y"].shape[0])


class ChunkBatches(IterableDataset):
    """Iterable of batches (dicts of tensors) over chunk files; call ``set_epoch`` before each epoch."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        batch_size: int,
        fields: Sequence[str] | None = CHUNK_FIELDS,
        shuffle_files: bool = False,
        shuffle_within_file: bool = False,
        mix_files: int = 1,
        seed: int = 0,
        drop_last: bool = False,
        open_files: int = 8,
    ):
        self.paths = [str(p) for p in paths]
        self.batch_size, self.fields = int(batch_size), None if fields is None else list(fields)
        self.shuffle_files, self.shuffle_within_file = shuffle_files, shuffle_within_file
        self.mix_files, self.seed, self.drop_last = int(mix_files), int(seed), drop_last
        self.open_files = max(open_files, mix_files + 1) if mix_files > 0 else max(len(self.paths), 1)
        self.sizes = torch.tensor([chunk_len(p) for p in self.paths], dtype=torch.int64)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def n_samples(self) -> int:
        return int(self.sizes.sum())

    def __len__(self) -> int:
        n, b = self.n_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def plan(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(file ids, sample indices) of each batch of this epoch, deterministic in (seed, epoch)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        nf = len(self.paths)
        order = torch.randperm(nf, generator=g) if self.shuffle_files else torch.arange(nf)
        step = self.mix_files if self.mix_files > 0 else max(nf, 1)
        pend_f, pend_i = torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64)
        for start in range(0, nf, step):
            group = order[start : start + step]
            sizes = self.sizes[group]
            fid = torch.repeat_interleave(group, sizes)
            idx = torch.cat([torch.arange(int(s)) for s in sizes]) if len(group) else fid
            if self.shuffle_within_file:
                p = torch.randperm(len(fid), generator=g)
                fid, idx = fid[p], idx[p]
            pend_f, pend_i = torch.cat([pend_f, fid]), torch.cat([pend_i, idx])
            while len(pend_f) >= self.batch_size:
                yield pend_f[: self.batch_size], pend_i[: self.batch_size]
                pend_f, pend_i = pend_f[self.batch_size :], pend_i[self.batch_size :]
        if len(pend_f) and not self.drop_last:
            yield pend_f, pend_i

    def gather(self, fid: torch.Tensor, idx: torch.Tensor, cache: OrderedDict) -> dict[str, torch.Tensor]:
        """One batch: samples grouped by file, indices sorted, one gather (or slice) per field and file."""
        key = fid * (int(self.sizes.max()) + 1) + idx
        srt = torch.argsort(key)
        fid, idx = fid[srt], idx[srt]
        files, counts = torch.unique_consecutive(fid, return_counts=True)
        parts: dict[str, list[torch.Tensor]] = {}
        start = 0
        for f, c in zip(files.tolist(), counts.tolist(), strict=True):
            i = idx[start : start + c]
            start += c
            if f not in cache:
                cache[f] = open_chunk(self.paths[f], self.fields)
                while len(cache) > self.open_files:
                    cache.popitem(last=False)
            cache.move_to_end(f)
            lo, hi = int(i[0]), int(i[-1]) + 1
            contiguous = hi - lo == c
            for k, t in cache[f].items():
                parts.setdefault(k, []).append(t[lo:hi] if contiguous else t[i])
        return {k: v[0] if len(v) == 1 else torch.cat(v) for k, v in parts.items()}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        cache: OrderedDict = OrderedDict()
        for b, (fid, idx) in enumerate(self.plan()):
            if b % nw == wid:
                yield self.gather(fid, idx, cache)


def make_loader(batches: ChunkBatches, num_workers: int = 0, pin_memory: bool = False):
    """Iterable over ``batches`` in the same order; with workers, batches are built in parallel processes."""
    if num_workers <= 0 and not pin_memory:
        return batches
    return DataLoader(
        batches,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers > 0 else None,
    )
