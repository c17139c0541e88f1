"""The chunk contract: what a chunk file holds and how it proves it is intact (its name: ta2d.plan).

A chunk is one (split, period) of samples, ``results/patch_pt/{split}_chunk_{key}.pt`` (``ta2d.plan.chunk_name``,
which the label router, the Snakefile and the loader share): a dict of tensors
with N rows each (``FIELDS``: per-sample shape and dtype; ``x`` may be float16, ``patch.x_dtype``) plus
``crc32``, the CRC-32 of every tensor's bytes, recorded when the file is written (``save_tensors``; the
convention of every product ta2d stores, ta2d.checksums). Its rejected label rows go beside it in
``{split}_chunk_{key}.rejects.csv`` (``REJECT_COLUMNS``, reasons in ta2d.rejects). Embedding and
unlabelled-tile files are written the same way, with their own fields. ``OPTIONAL_FIELDS`` are held only when
the config asks for them (``background``: inputs.background) and checked only where present, so a chunk without
them still meets the contract.

Why the CRCs: chunks are memory-mapped for training, and torch's mmap loading skips the zip CRC, so
flipped bytes in a tensor's data would go unnoticed. Wherever a field is read whole anyway (``ta2d
inspect``, ``ta2d verify``, the normalisation statistics, the loader's first read of each file) its CRC
is checked and a mismatch names the file and the field. Files written before ta2d recorded CRCs have
none and are not checked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ta2d.checksums import CHECKSUM_KEY, CORRUPT, crc_mismatches, save_with_checksums, tensor_crc
from ta2d.rejects import REJECT_COLUMNS

if TYPE_CHECKING:  # torch is imported where tensors are handled: the Snakefile and build_index import names
    import torch

__all__ = [
    "BACKGROUND_FIELD", "CHECKSUM_KEY", "FIELDS", "MODEL_FIELDS", "OPTIONAL_FIELDS", "REJECT_COLUMNS", "X_DTYPES",
    "ChunkError", "checksum_problems", "chunk_len", "contract_problems", "field_crc", "open_chunk",
    "save_tensors", "stored_checksums", "verify_fields",
]

# per-sample shape (x: 19 channels x patch x patch, the patch side filled in by contract_problems) and
# torch dtype name
FIELDS: dict[str, tuple[tuple[int, ...], str]] = {
    "x": ((19, 9, 9), "float32"),
    "y": ((), "float32"),
    "time7": ((7,), "float32"),
    "loc": ((3,), "float32"),
    "landcover_onehot": ((17,), "float32"),
    "elev": ((), "float32"),  # station elevation, m (the pixel DEM where the station table has none)
    "stn": ((), "int32"),
    "time": ((), "int64"),
    "pixel": ((2,), "int32"),
}
BACKGROUND_FIELD = "background"
# fields a chunk holds only when the config asks for them; checked when present, never required, so chunks built
# without them (and readers that do not know them) stay valid
OPTIONAL_FIELDS: dict[str, tuple[tuple[int, ...], str]] = {
    # the reanalysis t2m at the pixel and slot, height-corrected to the pixel DEM, °C (inputs.background)
    BACKGROUND_FIELD: ((), "float32"),
}
MODEL_FIELDS = ("x", "y", "time7", "loc", "landcover_onehot", "elev")  # what training reads (+ optional ones a
# model was built with: ta2d.models.input_fields)
X_DTYPES = ("float32", "float16")  # patch.x_dtype: how x may be stored


class ChunkError(ValueError):
    """A chunk (or embedding) file that cannot be used; the message names the file and what is wrong."""


def open_chunk(path: str | Path, fields: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """A chunk's tensors, memory-mapped (nothing is read until used). Raises ChunkError naming the file."""
    import torch

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
            raise KeyError(f"{path}: missing fields {missing} (has {sorted(k for k in d if k != CHECKSUM_KEY)})")
        out = {f: d[f] for f in fields}
    lengths = {k: (tuple(v.shape[:1]) if isinstance(v, torch.Tensor) else type(v).__name__) for k, v in out.items()}
    if len(set(lengths.values())) > 1:  # shapes only: nothing of a memory-mapped chunk is read
        raise ChunkError(f"{path}: fields disagree on the number of samples: {lengths}")
    return out


def chunk_len(path: str | Path) -> int:
    return int(open_chunk(path, ["y"])["y"].shape[0])


# --- checksums -----------------------------------------------------------------------------------------
field_crc = tensor_crc  # CRC-32 (hex) of a field's row-major bytes: the one implementation, ta2d.checksums


def save_tensors(tensors: Mapping[str, object], path: str | Path) -> None:
    """Write a chunk-like file atomically, with the CRC of every tensor under ``crc32`` (ta2d.checksums)."""
    save_with_checksums(tensors, path)


def write_row_subset(src: str | Path, dst: str | Path, keep) -> int:
    """Write the rows of chunk-like file ``src`` (a chunk or an embedding file) for which ``keep(stn)`` is True into
    ``dst``, every per-sample field filtered alike; returns the rows written. Fields are checked against their
    CRCs as they are read whole."""
    import torch

    data = open_chunk(src)
    verify_fields(src, data)
    mask = torch.from_numpy(keep(data["stn"].numpy()))
    save_tensors({k: v[mask] for k, v in data.items()}, dst)
    return int(mask.sum())


def stored_checksums(path: str | Path) -> dict[str, str] | None:
    """The CRCs recorded in a file (None when it has none); memory-mapped, so nothing else is read."""
    import torch

    d = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    crcs = d.get(CHECKSUM_KEY) if isinstance(d, dict) else None
    return dict(crcs) if isinstance(crcs, Mapping) else None


def checksum_problems(path: str | Path, tensors: Mapping[str, torch.Tensor],
                      stored: Mapping[str, str] | None) -> list[str]:
    """Fields of ``tensors`` (read whole) whose bytes do not match the CRC recorded for them."""
    if not stored:
        return []
    return [f"{path}: field {k}: CRC-32 {got} differs from the {want} recorded when it was written ({CORRUPT})"
            for k, got, want in crc_mismatches(tensors, stored)]


def verify_fields(path: str | Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Raise ChunkError naming the file and field when a field read whole does not match its CRC."""
    problems = checksum_problems(path, tensors, stored_checksums(path))
    if problems:
        raise ChunkError("; ".join(problems))


# --- the contract --------------------------------------------------------------------------------------
def contract_problems(data: Mapping, patch_size: int | None = None) -> list[str]:
    """What is wrong with a chunk's tensors against the contract; ``patch_size`` None = x's own odd size."""
    import torch

    problems = []
    if patch_size is None:
        x = data.get("x")
        patch_size = int(x.shape[-1]) if isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[-1] % 2 else 9
    n = None
    optional = {k: v for k, v in OPTIONAL_FIELDS.items() if k in data}
    for key, (shape, dtype_name) in {**FIELDS, **optional}.items():
        dtype = getattr(torch, dtype_name)
        if key == "x":
            shape = (19, patch_size, patch_size)
        t = data.get(key)
        if not isinstance(t, torch.Tensor):
            problems.append(f"key {key}: missing or not a tensor" if key in FIELDS else f"key {key}: not a tensor")
            continue
        n = t.shape[0] if n is None else n
        if t.dim() == 0 or tuple(t.shape[1:]) != shape or t.shape[0] != n:
            problems.append(f"key {key}: shape {tuple(t.shape)}, want (N, {', '.join(map(str, shape))})"
                            .replace(", )", ")"))
        if t.dtype != dtype and not (key == "x" and str(t.dtype).removeprefix("torch.") in X_DTYPES):
            problems.append(f"key {key}: dtype {t.dtype}, want {dtype}")
        elif t.is_floating_point() and not torch.isfinite(t).all():
            problems.append(f"key {key}: {int((~torch.isfinite(t)).sum())} non-finite values")
    # N = 0 is legal: a planned chunk whose label rows were all rejected (ta2d.plan); its rejects say why
    return problems
