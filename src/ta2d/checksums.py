"""One checksum convention for every product ta2d stores: each array a file holds carries the CRC-32 of its
stored bytes, recorded in the file itself when it is written.

* ``.pt`` files (chunks, embeddings, unlabelled tiles, model files, training checkpoints): a top-level entry
  ``crc32``, {dotted path of the tensor in the saved object, e.g. ``x`` or ``model.encoder.w``: CRC-32 (8 hex
  digits) of the tensor's row-major bytes} (:func:`save_with_checksums`).
* NetCDF files (scenes, maps): every variable's attribute ``ta2d_crc32``, the CRC-32 of its values as HDF5
  stores them (the on-disk dtype, before any CF decoding: packed int16 stays int16, fill values stay in), in C
  order; a variable-length string counts as its UTF-8 bytes followed by a NUL. Recorded by reopening the written
  temp file before it is renamed into place (:func:`atomic_netcdf`), so the CRCs are of what is on disk.

Why: torch's memory-mapped loading skips the zip CRC, and HDF5 has no checksum of uncompressed data, so flipped
bytes in the arrays would go unnoticed by the containers. A file written before ta2d recorded checksums has none
and is not checked (``recorded`` False), never failed.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ta2d.atomic import atomic_path, atomic_torch_save

if TYPE_CHECKING:  # torch, numpy and h5py are imported where arrays are handled: the Snakefile imports names here
    import h5py
    import numpy as np
    import torch

CHECKSUM_KEY = "crc32"  # the .pt entry
NETCDF_ATTR = "ta2d_crc32"  # the NetCDF variable attribute
_BLOCK_BYTES = 64 << 20  # a NetCDF variable is read in slabs of about this size: a scene need not fit in memory
# h5netcdf / netCDF-C store a dimension without a coordinate variable as a dataset holding nothing
_NOT_A_VARIABLE = b"This is a netCDF dimension but not a netCDF variable"
CORRUPT = "the file's bytes changed on disk: corrupt; rebuild it"


@dataclass
class ChecksumCheck:
    """What checking a file's recorded CRCs found: ``problems`` (each naming the tensor or variable), whether the
    file has any CRCs at all (``recorded``) and how many arrays were checked."""

    problems: list[str] = field(default_factory=list)
    recorded: bool = False
    n_checked: int = 0


# --- the CRC ---------------------------------------------------------------------------------------------
def crc_hex(crc: int) -> str:
    return f"{crc & 0xFFFFFFFF:08x}"


def tensor_crc(t: torch.Tensor) -> str:
    """CRC-32 (hex) of a tensor's bytes in row-major order, whatever its dtype, strides or device."""
    import torch

    if t.numel() == 0:  # an empty tensor may carry stride 0, which view(uint8) refuses
        return crc_hex(zlib.crc32(b""))
    t = t.detach()
    if t.layout != torch.strided:
        t = t.to_dense()
    data = t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return crc_hex(zlib.crc32(memoryview(data)))


def named_tensors(obj: object, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a nested saved object (dicts, lists, tuples) with its dotted path (``model.head.w``)."""
    import torch

    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            if not (prefix == "" and k == CHECKSUM_KEY):
                yield from named_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from named_tensors(v, f"{prefix}.{i}" if prefix else str(i))


# --- .pt files -------------------------------------------------------------------------------------------
def with_checksums(obj: Mapping) -> dict:
    """``obj`` with ``crc32``: the CRC of every tensor in it, by dotted path (any older ``crc32`` replaced)."""
    rest = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
    return {**rest, CHECKSUM_KEY: {name: tensor_crc(t) for name, t in named_tensors(rest)}}


def save_with_checksums(obj: Mapping, path: str | Path) -> None:
    """torch.save ``obj`` atomically, with the CRCs of its tensors (:func:`with_checksums`)."""
    atomic_torch_save(with_checksums(obj), path)


def crc_mismatches(tensors: Mapping[str, torch.Tensor], stored: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(name, CRC now, CRC recorded) of each tensor whose bytes differ from the CRC recorded for it; tensors with
    no recorded CRC are not judged here."""
    return [(name, got, want) for name, t in tensors.items()
            if (want := stored.get(name)) is not None and (got := tensor_crc(t)) != want]


def tensor_checksum_problems(data: object) -> ChecksumCheck:
    """The tensors of a loaded ``.pt`` object (read whole here) against the CRCs recorded in it."""
    stored = data.get(CHECKSUM_KEY) if isinstance(data, Mapping) else None
    if not isinstance(stored, Mapping) or not stored:
        return ChecksumCheck()
    found = dict(named_tensors(data))
    check = ChecksumCheck(recorded=True, n_checked=len(found))
    check.problems += [f"tensor {name}: no CRC-32 recorded for it, though the file records the others (changed "
                       "after it was written)" for name in found if name not in stored]
    check.problems += [f"tensor {name}: CRC-32 {got} differs from the {want} recorded when it was written ({CORRUPT})"
                       for name, got, want in crc_mismatches(found, stored)]
    check.problems += [f"tensor {name}: recorded when the file was written, but no longer in it"
                       for name in stored if name not in found]
    return check


def pt_checksum_problems(path: str | Path) -> ChecksumCheck:
    """A ``.pt`` file's tensors (memory-mapped, then read whole) against its recorded CRCs. Raises what torch
    raises for a file it cannot read."""
    import torch

    return tensor_checksum_problems(torch.load(path, map_location="cpu", weights_only=True, mmap=True))


# --- NetCDF files ----------------------------------------------------------------------------------------
def netcdf_variables(f: h5py.File) -> list[tuple[str, h5py.Dataset]]:
    """(name, dataset) of every netCDF variable in an open file, groups included, by name."""
    import h5py

    found = []

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Dataset) and not _attr_bytes(obj.attrs.get("NAME")).startswith(_NOT_A_VARIABLE):
            found.append((name, obj))

    f.visititems(visit)
    return sorted(found, key=lambda item: item[0])


def dataset_crc(ds: h5py.Dataset) -> str:
    """CRC-32 (hex) of a dataset's stored values in C order (see the module docstring), read a slab at a time
    along its first axis, whole HDF5 chunks per slab so that no chunk is decompressed twice."""
    import numpy as np

    if ds.shape is None or ds.size == 0:
        return crc_hex(zlib.crc32(b""))
    if ds.ndim == 0:
        return crc_hex(_update_crc(0, ds[...]))
    row_bytes = ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
    per_chunk = ds.chunks[0] if ds.chunks else 1
    rows = max(per_chunk, _BLOCK_BYTES // max(row_bytes, 1) // per_chunk * per_chunk)
    crc = 0
    for start in range(0, ds.shape[0], rows):
        crc = _update_crc(crc, ds[start : start + rows])
    return crc_hex(crc)


def _update_crc(crc: int, block: np.ndarray) -> int:
    import numpy as np

    if block.dtype == object:  # variable-length strings (or sequences): their bytes, each followed by a NUL
        parts = (v.encode() if isinstance(v, str) else v if isinstance(v, bytes) else np.asarray(v).tobytes()
                 for v in block.reshape(-1))
        return zlib.crc32(b"".join(p + b"\0" for p in parts), crc)
    return zlib.crc32(np.ascontiguousarray(block).reshape(-1).view(np.uint8), crc)


def record_netcdf_checksums(path) -> dict[str, str]:
    """Set ``ta2d_crc32`` on every variable of a written NetCDF file (a path or a seekable binary buffer), from
    its stored bytes; returns them."""
    import h5py
    import numpy as np

    with h5py.File(path, "r+") as f:
        variables = netcdf_variables(f)
        crcs = {name: dataset_crc(ds) for name, ds in variables}
        for name, ds in variables:
            ds.attrs[NETCDF_ATTR] = np.bytes_(crcs[name])  # fixed-length ASCII: a netCDF text attribute
    return crcs


def netcdf_bytes_with_checksums(data) -> bytes:
    """A NetCDF file built in memory (xarray's ``to_netcdf()`` without a path) with its checksums recorded."""
    import io

    buf = io.BytesIO(bytes(data))
    record_netcdf_checksums(buf)
    return buf.getvalue()


@contextlib.contextmanager
def atomic_netcdf(target: str | Path):
    """atomic_path for a NetCDF product: yields the temp path to write; once the writer has closed it, its
    checksums are recorded (:func:`record_netcdf_checksums`), then it is renamed to ``target``."""
    with atomic_path(target) as tmp:
        yield tmp
        record_netcdf_checksums(tmp)


def netcdf_checksum_problems(path: str | Path) -> ChecksumCheck:
    """Every variable of a NetCDF file (read whole, raw) against the ``ta2d_crc32`` recorded on it. Raises
    OSError for a file HDF5 cannot open."""
    import h5py

    with h5py.File(path, "r") as f:
        variables = netcdf_variables(f)
        stored = {name: _attr_text(ds.attrs.get(NETCDF_ATTR)) for name, ds in variables}
        if not any(stored.values()):
            return ChecksumCheck()
        check = ChecksumCheck(recorded=True, n_checked=len(variables))
        for name, ds in variables:
            want = stored[name]
            if want is None:
                check.problems.append(f"variable {name}: no {NETCDF_ATTR} recorded on it, though the file records "
                                      "the others (changed after it was written)")
                continue
            try:
                got = dataset_crc(ds)
            except (OSError, ValueError, RuntimeError) as err:  # a damaged compressed chunk fails to decode
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
                check.problems.append(f"variable {name}: its stored data cannot be read ({first}): {CORRUPT}")
                continue
            if got != want:
                check.problems.append(f"variable {name}: CRC-32 {got} of its stored data differs from the {want} "
                                      f"recorded when it was written ({CORRUPT})")
    return check


def _attr_bytes(value) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode()
    return bytes(value) if isinstance(value, bytes) else b""


def _attr_text(value) -> str | None:
    text = _attr_bytes(value).decode("ascii", "replace").strip("\0 ")
    return text or None
