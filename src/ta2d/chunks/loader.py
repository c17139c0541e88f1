"""Fast batch loader over chunk files (results/patch_pt/{split}_chunk_{key}.pt or embedding files).

Order. An epoch's order depends only on (seed, epoch): ``shuffle_files`` permutes the file order,
``mix_files`` files at a time form a block (1: the seed's per-file behaviour; 0: all files, a global
shuffle) whose samples ``shuffle_within_file`` permutes together. Blocks follow each other and batches
run on across block boundaries: only the last batch of an epoch is short. A batch holds its samples
sorted by (file, index), and ``plan()`` lists them.

Data. Files are opened with ``torch.load(path, weights_only=True, mmap=True)``. How a batch is gathered
depends on the order and the memory budget (``max_resident_bytes``; default: half of what this process
may use, ``memory_budget()``), never what it holds (``mode``):

* ``resident`` (shuffled within files, everything fits the budget): every file's fields are read once, in
  file order, into one tensor per field (the first epoch does it, or ``prepare()`` ahead, as
  ``make_loader`` does before forking workers, which then share it). Then any order, global, block or per
  file, is one ``index_select`` per field and batch.
* ``blocks`` (shuffled, beyond the budget, two blocks fit): each block of ``mix_files`` files is read
  whole and in order by a thread, one block ahead: its small fields into one of two block buffers, its
  big fields (x, emb: rows of at least 256 bytes) paged in through the file mapping, sequentially (the
  kernel reads ahead). A batch is then one ``index_select`` per small field plus, per file of the block,
  one per big field from the mapped file, in memory by then: each file is read sequentially once per
  epoch and its big fields are copied once, into the batches. Loader workers each read the blocks that
  hold their batches.
* ``mapped`` (not shuffled within files; or a shuffled block beyond the budget): a batch is a zero-copy
  slice of the memory-mapped file (concatenated at file boundaries), or one gather per field and file,
  fast only when the files are in the page cache.

Integrity. The first time a file is read, in every mode, its fields are checked against the CRCs recorded
in it (ta2d.chunks.contract): the bytes read into memory in modes 'resident' and 'blocks' (whose big
fields are read whole through the mapping instead of paged in), the whole mapped file when mode 'mapped'
first opens it. ``prepare()`` checks every file up front where loader workers will read them: each worker
is forked anew every epoch and would check again.

Reading a file's fields into memory is one ``pread`` per field straight into place, at the byte offsets of
the field's record in the file (torch's zip format stores them uncompressed; worked out once per file and
checked against the mapped file, else the mapped tensors are copied). Full batches are gathered into a
few reused output buffers, handed out only while no tensor outside the loader shares them.
"""

from __future__ import annotations

import math
import os
import struct
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ta2d.chunks.contract import MODEL_FIELDS as CHUNK_FIELDS
from ta2d.chunks.contract import ChunkError, open_chunk, verify_fields

_BIG_ROW_BYTES = 256
_OFFSETS: dict[tuple, dict[str, int]] = {}  # (path, size, mtime, fields) -> byte offset of each field's data
_storage_use_count = getattr(torch._C, "_storage_Use_Count", None)


def memory_budget() -> int:
    """Half of the memory this process may use: min(MemAvailable, the memory limits of its cgroups) / 2."""
    limits = []
    try:
        with open("/proc/meminfo") as f:
            limits += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    try:
        cgroups = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        cgroups = []
    for line in cgroups:  # v2 "0::/path", v1 "N:memory:/path"; a SLURM job's limit sits on one of the parents
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[1] == "":
            root, name = Path("/sys/fs/cgroup"), "memory.max"
        elif "memory" in parts[1].split(","):
            root, name = Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"
        else:
            continue
        p = root / parts[2].lstrip("/")
        while True:
            try:
                v = (p / name).read_text().strip()
                if v.isdigit():
                    limits.append(int(v))
            except OSError:
                pass
            if p == root or root not in p.parents:
                break
            p = p.parent
    return min(limits) // 2 if limits else 4 << 30


def _field_offsets(path: str, tensors: dict[str, torch.Tensor]) -> dict[str, int] | None:
    """Byte offset in the file of each memory-mapped tensor's data (torch's zip format stores records
    uncompressed), or None when it cannot be worked out."""
    try:
        with zipfile.ZipFile(path) as z, open(path, "rb") as f:
            records = {}
            for zi in z.infolist():
                if "/data/" not in zi.filename or zi.compress_type != zipfile.ZIP_STORED:
                    continue
                f.seek(zi.header_offset)
                head = f.read(30)
                if head[:4] != b"PK\x03\x04":
                    return None
                n_name, n_extra = struct.unpack("<HH", head[26:30])
                records[zi.header_offset + 30 + n_name + n_extra] = zi.file_size
    except (OSError, zipfile.BadZipFile, struct.error):
        return None
    if not tensors or not records or not all(t.is_contiguous() for t in tensors.values()):
        return None
    ptr = {k: t.untyped_storage().data_ptr() for k, t in tensors.items()}
    k0 = next(iter(ptr))
    found = None
    for rec in records:  # the mapping's base: the one that puts every storage at a record's start
        base = ptr[k0] - rec
        if all(
            records.get(ptr[k] - base, -1) >= (t.storage_offset() + t.numel()) * t.itemsize for k, t in tensors.items()
        ):
            if found is not None:
                return None
            found = base
    if found is None:
        return None
    return {k: ptr[k] - found + t.storage_offset() * t.itemsize for k, t in tensors.items()}


def _bytes(t: torch.Tensor) -> memoryview:
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def _pread_into(fd: int, dest: torch.Tensor, offset: int) -> None:
    view, done = _bytes(dest), 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            raise ChunkError(f"file ended early while reading {len(view)} bytes at offset {offset}")
        done += n


class _OutPool:
    """A few reused output buffers for full batches (fresh memory costs page faults on every batch).

    A batch is handed out as views of a pooled buffer, and a buffer is reused only when no tensor outside
    the pool still shares its storage (torch's storage use count); otherwise a fresh one is allocated.
    Not used in loader workers, whose batches travel to the main process through shared memory.
    """

    def __init__(self, spec: dict, rows: int, size: int = 4):
        self.spec, self.rows, self.size = spec, rows, size
        self.bufs: list[dict[str, torch.Tensor]] = []
        self.next = 0
        self.base = None  # the use count of a buffer nobody else holds

    @staticmethod
    def _count(t: torch.Tensor) -> int:
        return _storage_use_count(t.untyped_storage()._cdata)

    def get(self) -> dict[str, torch.Tensor]:
        for _ in range(len(self.bufs)):
            bufs = self.bufs[self.next]
            self.next = (self.next + 1) % len(self.bufs)
            if all(self._count(t) == self.base for t in bufs.values()):
                return {k: t[:] for k, t in bufs.items()}
        bufs = {k: torch.empty((self.rows, *shape), dtype=dtype) for k, (shape, dtype) in self.spec.items()}
        if len(self.bufs) < self.size:
            self.base = self._count(next(iter(bufs.values()))) if bufs else 0
            self.bufs.append(bufs)
        return {k: t[:] for k, t in bufs.items()}


def _select(src: dict[str, torch.Tensor], ids: torch.Tensor, pool: _OutPool | None) -> dict[str, torch.Tensor]:
    """One index_select per field, into pooled buffers when the batch is full-sized."""
    if pool is None or len(ids) != pool.rows:
        return {k: torch.index_select(t, 0, ids) for k, t in src.items()}
    out = pool.get()
    for k, t in src.items():
        torch.index_select(t, 0, ids, out=out[k])
    return out


class ChunkBatches(IterableDataset):
    """Iterable of batches (dicts of tensors) over chunk files; call ``set_epoch`` before each epoch.

    With loader workers, worker w of n serves batches w, w + n, ... of the same plan.
    """

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
        open_files: int = 64,
        max_resident_bytes: int | None = None,
    ):
        self.paths = [str(p) for p in paths]
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.shuffle_files, self.shuffle_within_file = shuffle_files, shuffle_within_file
        self.mix_files, self.seed, self.drop_last = int(mix_files), int(seed), drop_last
        self.open_files = max(open_files, mix_files + 1) if mix_files > 0 else max(len(self.paths), 1)
        self.max_resident_bytes = memory_budget() if max_resident_bytes is None else int(max_resident_bytes)
        self.fields = None if fields is None else list(fields)
        sizes, self.spec = [], {}  # spec: field -> (shape of one sample, dtype), the same in every file
        for p in self.paths:
            d = open_chunk(p, self.fields) if self.fields else {"y": open_chunk(p, ["y"])["y"]}
            if self.fields is None:
                self.fields = list(d)
            if not self.spec and self.fields:
                self.spec = {k: (tuple(v.shape[1:]), v.dtype) for k, v in d.items()}
                first = p
            for k, v in (d.items() if self.fields else ()):
                if (tuple(v.shape[1:]), v.dtype) != self.spec[k]:
                    raise ChunkError(
                        f"{p}: field {k} is {tuple(v.shape[1:])} {v.dtype} per sample, {first} has {self.spec[k]}"
                    )
            sizes.append(int(next(iter(d.values())).shape[0]))
        self.sizes = torch.tensor(sizes, dtype=torch.int64)
        self.ends = torch.cumsum(self.sizes, 0)
        self.starts = self.ends - self.sizes  # sample i of file f has the canonical id starts[f] + i
        self.row_bytes = sum(math.prod(s) * t.itemsize for s, t in self.spec.values())
        # mode 'blocks' gathers big fields (x, emb) straight from the mapped files, reads the others
        self.big = [k for k, (s, t) in self.spec.items() if math.prod(s) * t.itemsize >= _BIG_ROW_BYTES]
        self.epoch = 0
        self._resident: dict[str, torch.Tensor] | None = None
        self._open: OrderedDict[int, dict[str, torch.Tensor]] = OrderedDict()  # mapped files, kept across epochs
        self._out: _OutPool | None = None
        self._offsets: dict[int, tuple | bool] = {}  # file -> (field byte offsets, size, mtime), False: copy
        self._verified: set[int] = set()  # files whose fields (all the loader reads) matched their CRCs
        self._bufs: list[dict[str, torch.Tensor]] = []  # the two block buffers (mode 'blocks')
        if self.shuffle_within_file and self.mode == "mapped" and len(self.paths) > 1:
            warnings.warn(
                f"ChunkBatches: a shuffled block of {self._block_rows() * self.row_bytes / 1e9:.1f} GB exceeds the "
                f"memory budget ({self.max_resident_bytes / 1e9:.1f} GB): batches are gathered from the "
                "memory-mapped files, slow unless they are in the page cache; a smaller mix_files reads "
                "blocks sequentially",
                stacklevel=2,
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def n_samples(self) -> int:
        return int(self.sizes.sum())

    def __len__(self) -> int:
        n, b = self.n_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def _step(self) -> int:
        return self.mix_files if self.mix_files > 0 else max(len(self.paths), 1)

    def _block_rows(self) -> int:
        """Samples in the largest block any epoch can form."""
        return int(self.sizes.sort(descending=True).values[: self._step()].sum())

    @property
    def mode(self) -> str:
        """How batches are gathered: 'resident', 'blocks' or 'mapped' (see the module docstring)."""
        if not self.shuffle_within_file or not self.paths:
            return "mapped"
        if self.n_samples * self.row_bytes <= self.max_resident_bytes:
            return "resident"
        return "blocks" if 2 * self._block_rows() * self.row_bytes <= self.max_resident_bytes else "mapped"

    # ---- the order ----------------------------------------------------------------------------------
    def _blocks(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(the block's files in id order, canonical ids of its samples in epoch order) for each block."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        nf = len(self.paths)
        order = torch.randperm(nf, generator=g) if self.shuffle_files else torch.arange(nf)
        blocks = []
        for start in range(0, nf, self._step()):
            group = order[start : start + self._step()]
            sizes = self.sizes[group]
            ids = torch.repeat_interleave(self.starts[group] - (torch.cumsum(sizes, 0) - sizes), sizes)
            ids += torch.arange(len(ids))
            if self.shuffle_within_file:
                ids = ids[torch.randperm(len(ids), generator=g)]
            blocks.append((group.sort().values, ids))
        return blocks

    def _batch_ids(self, wid: int = 0, nw: int = 1) -> Iterator[torch.Tensor]:
        """Sorted canonical ids of batches wid, wid + nw, ... of this epoch."""
        blocks = self._blocks()
        stream = torch.cat([ids for _, ids in blocks]) if blocks else torch.empty(0, dtype=torch.int64)
        b, m = self.batch_size, len(stream) // self.batch_size
        rows = stream[: m * b].view(m, b).sort(dim=1).values
        yield from rows[wid::nw]
        if len(stream) > m * b and not self.drop_last and m % nw == wid:
            yield stream[m * b :].sort().values

    def plan(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(file ids, sample indices) of each batch of this epoch, in the order the batch holds them."""
        for ids in self._batch_ids():
            f = torch.searchsorted(self.ends, ids, right=True)
            yield f, ids - self.starts[f]

    # ---- the data -----------------------------------------------------------------------------------
    def _alloc(self, rows: int) -> dict[str, torch.Tensor]:
        return {k: torch.empty((rows, *shape), dtype=dtype) for k, (shape, dtype) in self.spec.items()}

    def _fill(self, bufs: dict[str, torch.Tensor], files: Sequence[int]) -> list[int]:
        """Read the files' fields one after the other into bufs; returns where each file starts.

        Each field's bytes are read with one pread into place (sequential reads, no page faults), at the
        offsets worked out once per file from the mapped tensors; the first sample is checked against
        the mapped file. Otherwise (or when that check fails) the mapped tensors are copied. The first time
        a file is read, the fields read are checked against the CRCs recorded in it (ta2d.chunks.contract).
        """
        at, where = 0, []
        for f in files:
            n = int(self.sizes[f])
            where.append(at)
            offs = self._offsets.get(f)
            if offs is None:
                offs = self._offsets[f] = self._find_offsets(f, bufs, at, n)
            elif offs is False:
                for k, t in open_chunk(self.paths[f], list(bufs)).items():
                    bufs[k][at : at + n].copy_(t)
            else:
                self._read(f, bufs, at, n, offs)
            if f not in self._verified:
                verify_fields(self.paths[f], {k: b[at : at + n] for k, b in bufs.items()})
                if len(bufs) == len(self.spec):  # mode 'blocks' reads its big fields apart (_load_block)
                    self._verified.add(f)
            at += n
        return where

    def _find_offsets(self, f: int, bufs: dict[str, torch.Tensor], at: int, n: int) -> tuple | bool:
        """Read file f into bufs[at:at + n], the first time: returns its field offsets, or False (copied)."""
        path = self.paths[f]
        d = open_chunk(path, self.fields)
        st = os.stat(path)
        key = (path, st.st_size, st.st_mtime_ns, tuple(d))
        offs = _OFFSETS.get(key)
        if offs is None and hasattr(os, "preadv"):
            offs = _field_offsets(path, d)
        if offs is not None:
            found = (offs, st.st_size, st.st_mtime_ns)
            if not n:
                return found
            self._read(f, bufs, at, n, found)
            if all(torch.equal(_row_bytes(bufs[k][at : at + 1]), _row_bytes(d[k][:1])) for k in bufs):
                _OFFSETS[key] = offs
                return found
        for k in bufs:
            bufs[k][at : at + n].copy_(d[k])
        return False

    def _read(self, f: int, bufs: dict[str, torch.Tensor], at: int, n: int, found: tuple) -> None:
        offs, size, mtime = found
        fd = os.open(self.paths[f], os.O_RDONLY)
        try:
            st = os.fstat(fd)
            if (st.st_size, st.st_mtime_ns) != (size, mtime):
                raise ChunkError(f"{self.paths[f]}: the file changed while it was in use (rebuilt?); restart")
            for k in sorted(bufs, key=offs.get):  # in file order
                _pread_into(fd, bufs[k][at : at + n], offs[k])
        finally:
            os.close(fd)

    def prepare(self) -> None:
        """What the first epoch would do, now: in mode 'resident' copy every file into memory; in the others check
        every file's CRCs (make_loader calls it before starting workers, so that they inherit both)."""
        if self.mode == "resident":
            if self._resident is None:
                res = self._alloc(self.n_samples)
                self._fill(res, range(len(self.paths)))
                self._resident = res
            return
        for f, path in enumerate(self.paths):
            self._check_mapped(f, open_chunk(path, self.fields))

    def _check_mapped(self, f: int, fields: dict[str, torch.Tensor]) -> None:
        """The first time file f is read through its mapping, check its fields (read whole) against its CRCs."""
        if f not in self._verified:
            verify_fields(self.paths[f], fields)
            self._verified.add(f)

    def gather(self, fid: torch.Tensor, idx: torch.Tensor, cache: OrderedDict | None = None) -> dict[str, torch.Tensor]:
        """Samples idx[j] of files fid[j], sorted by (file, index): from the resident copy in mode 'resident'
        (made on first use), else from the memory-mapped files (open ones kept in ``cache``)."""
        ids = (self.starts[fid] + idx).sort().values
        if len(ids) == 0:
            return {k: torch.empty((0, *shape), dtype=dtype) for k, (shape, dtype) in self.spec.items()}
        if self.mode == "resident":
            self.prepare()
            return _select(self._resident, ids, None)
        return self._take_mapped(ids, self._open if cache is None else cache)

    def _take_mapped(self, ids: torch.Tensor, cache: OrderedDict) -> dict[str, torch.Tensor]:
        """Sorted canonical ids: per file a zero-copy slice when they are a contiguous run, else a gather."""
        f = torch.searchsorted(self.ends, ids, right=True)
        local = ids - self.starts[f]
        files, counts = torch.unique_consecutive(f, return_counts=True)
        parts: dict[str, list[torch.Tensor]] = {}
        start = 0
        for fi, c in zip(files.tolist(), counts.tolist(), strict=True):
            i = local[start : start + c]
            start += c
            if fi not in cache:
                cache[fi] = open_chunk(self.paths[fi], self.fields)
                self._check_mapped(fi, cache[fi])
                while len(cache) > self.open_files:
                    cache.popitem(last=False)
            cache.move_to_end(fi)
            lo, hi = int(i[0]), int(i[-1]) + 1
            for k, t in cache[fi].items():
                parts.setdefault(k, []).append(t[lo:hi] if hi - lo == c else torch.index_select(t, 0, i))
        return {k: v[0] if len(v) == 1 else torch.cat(v) for k, v in parts.items()}

    def _load_block(self, files: torch.Tensor, slot: int) -> tuple:
        """Read a block (mode 'blocks'): its small fields into block buffer ``slot``, its big ones mapped and
        paged in file by file, in order (one value per page; the kernel reads ahead), so that serving the
        block finds them in memory. Returns (small-field buffers, {file: mapped big fields}, per-file
        shift id -> buffer row, files)."""
        paths = [self.paths[f] for f in files.tolist()]
        small = {k: (shape, dtype) for k, (shape, dtype) in self.spec.items() if k not in self.big}
        while len(self._bufs) <= slot:
            self._bufs.append({k: torch.empty((self._block_rows(), *s), dtype=d) for k, (s, d) in small.items()})
        where = self._fill(self._bufs[slot], files.tolist())
        shift = torch.zeros(len(self.paths), dtype=torch.int64)
        shift[files] = torch.tensor(where, dtype=torch.int64) - self.starts[files]
        rows = int(self.sizes[files].sum())
        mapped = {f: open_chunk(p, self.big) for f, p in zip(files.tolist(), paths, strict=True)} if self.big else {}
        for f, d in mapped.items():
            if f not in self._verified:
                self._check_mapped(f, d)  # reads the big fields whole, which pages them in too
                continue
            for t in d.values():
                flat = t.reshape(-1)
                if len(flat):
                    flat[:: max(1, 4096 // t.itemsize)].sum()
        return {k: v[:rows] for k, v in self._bufs[slot].items()}, mapped, shift, files

    def _take_block(self, ids: torch.Tensor, block: tuple, pool: _OutPool | None) -> dict[str, torch.Tensor]:
        """Sorted canonical ids of one block: small fields from its buffers, big ones per file from the map."""
        small, mapped, shift, files = block
        n = len(ids)
        if pool is not None and n == pool.rows:
            out = pool.get()
        else:
            out = {k: torch.empty((n, *shape), dtype=dtype) for k, (shape, dtype) in self.spec.items()}
        f = torch.searchsorted(self.ends, ids, right=True)
        if small:
            pos = ids + shift[f]
            for k, t in small.items():
                torch.index_select(t, 0, pos, out=out[k])
        if mapped:
            local = ids - self.starts[f]
            cuts = torch.searchsorted(ids, self.starts[files]).tolist() + [n]
            for i, fi in enumerate(files.tolist()):
                a, e = cuts[i], cuts[i + 1]
                if a < e:
                    li = local[a:e]
                    for k, t in mapped[fi].items():
                        torch.index_select(t, 0, li, out=out[k][a:e])
        return out

    def _pool(self, nw: int) -> _OutPool | None:
        if nw > 1 or _storage_use_count is None:
            return None
        if self._out is None:  # kept across epochs: its buffers are paged in once
            self._out = _OutPool(self.spec, self.batch_size)
        return self._out

    def _iter_blocks(self, wid: int, nw: int) -> Iterator[dict[str, torch.Tensor]]:
        """Mode 'blocks': block j is served from one buffer while a thread reads block j + 1 into the other."""
        b, n, nb = self.batch_size, self.n_samples, len(self)
        pool = self._pool(nw)
        blocks = [(f, ids) for f, ids in self._blocks() if len(ids)]
        spans, e0 = [], 0  # stream range of each block and the batches of this worker that touch it
        for _, ids in blocks:
            e1 = e0 + len(ids)
            spans.append((e0, e1, [k for k in range(e0 // b, min((e1 - 1) // b, nb - 1) + 1) if k % nw == wid]))
            e0 = e1
        todo = [j for j, span in enumerate(spans) if span[2]]
        partial: dict[int, list[tuple[torch.Tensor, dict]]] = {}
        with ThreadPoolExecutor(1, thread_name_prefix="ta2d-blocks") as reader:
            ahead: Future | None = None
            for t, j in enumerate(todo):
                block = ahead.result() if ahead is not None else self._load_block(blocks[j][0], t % 2)
                if t + 1 < len(todo):
                    ahead = reader.submit(self._load_block, blocks[todo[t + 1]][0], (t + 1) % 2)
                ids, (e0, e1, mine) = blocks[j][1], spans[j]
                k0, k1 = -(-e0 // b), e1 // b  # batches [k0, k1) lie wholly inside this block
                if k1 > k0:
                    rows = ids[k0 * b - e0 : k1 * b - e0].view(-1, b).sort(dim=1).values
                for k in mine:
                    if k0 <= k < k1:
                        yield self._take_block(rows[k - k0], block, pool)
                        continue
                    lo, hi = max(e0, k * b), min(e1, (k + 1) * b)
                    piece = ids[lo - e0 : hi - e0].sort().values
                    partial.setdefault(k, []).append((piece, self._take_block(piece, block, None)))
                    if hi == min((k + 1) * b, n):
                        yield _combine(partial.pop(k))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        mode = self.mode
        if mode == "blocks":
            yield from self._iter_blocks(wid, nw)
            return
        take: Callable[[torch.Tensor], dict[str, torch.Tensor]]
        if mode == "resident":
            self.prepare()
            pool = self._pool(nw)

            def take(ids: torch.Tensor) -> dict[str, torch.Tensor]:
                return _select(self._resident, ids, pool)

        else:

            def take(ids: torch.Tensor) -> dict[str, torch.Tensor]:
                return self._take_mapped(ids, self._open)

        for ids in self._batch_ids(wid, nw):
            yield take(ids)

    def __getstate__(self) -> dict:
        """Pickled (spawned loader workers): without the in-memory copies, which each process rebuilds."""
        return {**self.__dict__, "_resident": None, "_bufs": [], "_open": OrderedDict(), "_out": None}


def _row_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(torch.uint8)


def _combine(pieces: list[tuple[torch.Tensor, dict]]) -> dict[str, torch.Tensor]:
    """A batch from pieces of consecutive blocks, in sorted canonical-id order like any other batch."""
    order = torch.argsort(torch.cat([p for p, _ in pieces]))
    return {k: torch.index_select(torch.cat([d[k] for _, d in pieces]), 0, order) for k in pieces[0][1]}


def make_loader(batches: ChunkBatches, num_workers: int = 0, pin_memory: bool = False):
    """Iterable over ``batches`` in the same order; with workers, batches are built in parallel processes."""
    if num_workers <= 0 and not pin_memory:
        return batches
    if num_workers > 0 and hasattr(batches, "prepare"):
        batches.prepare()  # forked workers share the resident copy and the CRC checks instead of redoing them
    return DataLoader(
        batches,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers > 0 else None,
    )
