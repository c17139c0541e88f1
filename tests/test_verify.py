"""Every product carries the CRC-32 of its arrays' stored bytes (ta2d.checksums), and `ta2d verify DIR` checks them
all: bytes flipped inside the array data of chunks, scenes, maps and model files (where the containers themselves
notice nothing) are all named with the command that rebuilds the file; model files that fail are refused; files
written before the checksums are reported unchecked; the loader checks every chunk the first time it reads it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from fakes import train_small_runs

from ta2d.checksums import CHECKSUM_KEY, NETCDF_ATTR, named_tensors
from ta2d.chunks.contract import ChunkError, save_tensors
from ta2d.chunks.loader import ChunkBatches, _field_offsets
from ta2d.demo.synthetic import make_chunk, write_chunks
from ta2d.grid import Domain, domain_lonlat
from ta2d.ingest.scene import SlotData, write_scene
from ta2d.maps.archive import day_dataset, day_slot_times, write_day
from ta2d.maps.predict import MASK_PREDICTED
from ta2d.models.model_file import ModelFileError, export_model, load_model_file, read_model_file
from ta2d.periods import period_slots
from ta2d.plan import chunk_name
from ta2d.training.checkpoints import read_checkpoint

DOMAIN = Domain(900, 911, 2700, 2715)  # 12 x 16 pixels
N_FLIPS = 20


# --- the products -----------------------------------------------------------------------------------------

def write_test_scene(path: Path, compression_level: int = 0) -> None:
    """A day of hourly slots; uncompressed by default, so that HDF5 itself has no check on the values."""
    rng = np.random.default_rng(1)
    nl, nc = DOMAIN.shape

    def read_slot(slot):
        if slot.hour == 5:
            return SlotData("no_files")
        return SlotData("ok", bt=rng.uniform(200, 300, (10, nl, nc)).astype(np.float32),
                        rf=rng.uniform(0, 1, (6, nl, nc)).astype(np.float32), sources=[f"{slot:%H}.nc"])

    write_scene(path, "20240401", period_slots("20240401", "D", [0]), DOMAIN, read_slot, {"input_kind": "test"},
                compression_level, progress=False)


def write_test_map(path: Path) -> None:
    lon, lat = domain_lonlat(DOMAIN)
    times = day_slot_times("20240410", [0])
    ta = np.random.default_rng(2).normal(12, 4, (24, *DOMAIN.shape)).astype(np.float32)
    mask = np.full(ta.shape, MASK_PREDICTED, np.uint8)
    ds = day_dataset(times, DOMAIN, lat, lon, ta, mask, ["ok"] * 24, ta + 0.5, ["ok: 3 station residuals kriged"] * 24,
                     np.full(24, 3), {"run": "cnn"})
    write_day(ds, path)


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    """One intact file of each kind, written by the real writers: chunk, scene, map, model file, checkpoint."""
    d = tmp_path_factory.mktemp("products")
    train = write_chunks(d / "patch_pt", "train", 1, 40, seed=7)
    best = train_small_runs(d, train, {"cnn": {"model": "cnn", "epochs": 1, "batch_size": 32, "head_hidden": 8,
                                               "cnn_channels": [4]}})["cnn"]
    pd.DataFrame([{"run": "cnn", "scheme": "held_out_days", "n": 40, "rmse": 1.0, "mae": 0.8, "bias": 0.0,
                   "floor": 0.8, "rmse_over_floor": 1.25}]).to_csv(d / "metrics.csv", index=False)
    model = d / "models" / "cnn.pt"
    export_model(best, model, "cnn", d / "metrics.csv", train, [], {"start": "2024-04-01", "end": "2024-04-03"}, 9)
    write_test_scene(d / "scene.nc")
    write_test_map(d / "map.nc")
    return {"chunk": train[0], "model": model, "scene": d / "scene.nc", "map": d / "map.nc", "best": best,
            "current": best.with_name("current.pt")}


def intact_tree(root: Path, products: dict) -> Path:
    """A workflow folder's results/ holding one product of each kind."""
    results = root / "results"
    for src, dest in [(products["chunk"], f"patch_pt/{chunk_name('train', '2024-04-01')}"),
                      (products["scene"], "scenes/20240401.nc"), (products["map"], "maps/cnn/20240410.nc"),
                      (products["model"], "models/cnn.pt"), (products["best"], "runs/cnn/best.pt"),
                      (products["current"], "runs/cnn/current.pt")]:
        (results / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, results / dest)
    return results


def ta2d_verify(folder: Path) -> subprocess.CompletedProcess:
    """The real command line, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "ta2d", "verify", str(folder)], capture_output=True, text=True,
                          timeout=600)


# --- where the array data lies in a file ---------------------------------------------------------------------

def pt_data_regions(path: Path, prefix: str = "", min_bytes: int = 1) -> list[tuple[int, int]]:
    """(offset, length) in the file of the bytes of every tensor whose dotted path starts with ``prefix`` and that
    holds at least ``min_bytes`` (inside the zip members that store them)."""
    loaded = torch.load(path, weights_only=True, mmap=True)
    tensors = {name: t for name, t in named_tensors(loaded) if t.numel()}
    offsets = _field_offsets(str(path), tensors)
    assert offsets is not None, f"{path}: cannot locate the tensors' data records"
    return [(offsets[k], t.numel() * t.element_size()) for k, t in tensors.items()
            if k.startswith(prefix) and t.numel() * t.element_size() >= min_bytes]


def netcdf_data_regions(path: Path) -> list[tuple[int, int]]:
    """(offset, length) in the file of every numeric variable's stored data: contiguous datasets and each chunk."""
    regions = []
    with h5py.File(path, "r") as f:
        for ds in f.values():
            if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "iuf" or b"not a netCDF variable" in \
                    bytes(ds.attrs.get("NAME", b"")):
                continue
            if ds.chunks is None:
                offset = ds.id.get_offset()
                if offset is not None:
                    regions.append((offset, ds.id.get_storage_size()))
            else:
                for i in range(ds.id.get_num_chunks()):
                    info = ds.id.get_chunk_info(i)
                    regions.append((info.byte_offset, info.size))
    return [r for r in regions if r[1] > 0]


def flip_random_byte(path: Path, regions: list[tuple[int, int]], rng: np.random.Generator) -> int:
    """Flip one bit pattern of one byte at a random position of the data regions (weighted by size)."""
    sizes = np.array([n for _, n in regions], np.float64)
    offset, length = regions[rng.choice(len(regions), p=sizes / sizes.sum())]
    at = offset + int(rng.integers(length))
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)[0]
        f.seek(at)
        f.write(bytes([b ^ int(rng.integers(1, 256))]))
    return at


def failing_files(stderr: str) -> dict[str, str]:
    """{file: its block of problems} of `ta2d verify`'s error output."""
    blocks = re.split(r"^(?=\S.*:$)", stderr, flags=re.M)
    return {b.splitlines()[0][:-1]: b for b in blocks if b.strip() and b.splitlines()[0].endswith(":")}


# --- the tests ----------------------------------------------------------------------------------------------

def test_an_intact_tree_verifies_clean(products, tmp_path):
    results = intact_tree(tmp_path, products)
    for folder in (tmp_path, results):  # the workflow folder or its results/
        out = ta2d_verify(folder)
        assert out.returncode == 0, out.stderr
        assert "6 files read" in out.stdout and "0 with problems" in out.stdout
        assert "1 chunks" in out.stdout and "1 scenes" in out.stdout and "1 maps" in out.stdout
        assert "1 models" in out.stdout and "2 checkpoints" in out.stdout and "GB/s" in out.stdout
        assert "no checksums recorded" not in out.stdout
    with h5py.File(results / "scenes/20240401.nc") as f:  # every variable carries its CRC
        assert all(re.fullmatch(r"[0-9a-f]{8}", f[v].attrs[NETCDF_ATTR].decode()) for v in ("bt", "rf", "sza", "lat",
                                                                                           "time", "status"))
    recorded = torch.load(products["model"], weights_only=True)[CHECKSUM_KEY]  # by dotted path
    model = torch.load(products["model"], weights_only=True)["model"]
    assert set(recorded) == {f"model.{k}" for k in model} and all(re.fullmatch(r"[0-9a-f]{8}", v)
                                                                   for v in recorded.values())


def test_random_byte_flips_in_the_array_data_are_all_named(products, tmp_path):
    """20 flips each in chunk tensors, scene variables and model weights (and a few in a deflated map), each in
    its own fresh copy: the containers load them all, `ta2d verify` names every one and its rebuild command."""
    rng = np.random.default_rng(20240401)
    results = intact_tree(tmp_path, products)
    flipped = []
    for i in range(N_FLIPS):
        chunk = results / "patch_pt" / chunk_name("train", f"flip{i:02d}")
        save_tensors(make_chunk(30, seed=100 + i), chunk)  # its own samples: no leak between the copies
        flip_random_byte(chunk, pt_data_regions(chunk), rng)
        torch.load(chunk, weights_only=True, mmap=True)  # the zip container does not notice
        scene = results / "scenes" / f"flip{i:02d}.nc"
        shutil.copy(products["scene"], scene)
        flip_random_byte(scene, netcdf_data_regions(scene), rng)
        with h5py.File(scene) as f:  # nor does HDF5
            f["bt"][()]
        model = results / "models" / f"flip{i:02d}.pt"
        shutil.copy(products["model"], model)
        flip_random_byte(model, pt_data_regions(model, "model.", min_bytes=16), rng)  # weights, not scalars
        torch.load(model, weights_only=True)
        flipped += [chunk, scene, model]
    for i in range(5):
        day = results / "maps" / "cnn" / f"2024041{i + 1}.nc"
        shutil.copy(products["map"], day)
        flip_random_byte(day, netcdf_data_regions(day), rng)
        flipped.append(day)

    out = ta2d_verify(tmp_path)
    assert out.returncode == 1
    named = failing_files(out.stderr)
    assert sorted(named) == sorted(str(p) for p in flipped)  # every flipped file, and no intact one
    for path in flipped:
        block = named[str(path)]
        assert "CRC-32" in block or ("maps" in path.parts and "cannot be read" in block), block
        what = "field" if "patch_pt" in path.parts else "tensor" if path.suffix == ".pt" else "variable"
        assert f"- {what} " in block, block
        assert f"rebuild just this file: snakemake --cores all --force {path.relative_to(tmp_path)}" in block
    assert f"{len(flipped)} with problems" in out.stdout
    assert "rebuild" in out.stderr and "reruns only the job that writes that file" in out.stderr


def test_a_model_file_with_a_flipped_weight_is_refused(products, tmp_path):
    model = tmp_path / "cnn.pt"
    shutil.copy(products["model"], model)
    flip_random_byte(model, pt_data_regions(model, "model.", min_bytes=16), np.random.default_rng(3))
    with pytest.raises(ModelFileError, match=rf"model file {re.escape(str(model))}: tensor model\.\S+: CRC-32"):
        load_model_file(model)
    with pytest.raises(ModelFileError, match="CRC-32"):
        read_model_file(model)
    load_model_file(products["model"])  # the intact one maps


def test_files_written_before_the_checksums_are_reported_unchecked(products, tmp_path):
    results = intact_tree(tmp_path, products)
    legacy_chunk = results / "patch_pt" / chunk_name("train", "2024-04-02")
    torch.save(make_chunk(20, seed=9), legacy_chunk)
    with h5py.File(results / "scenes/20240401.nc", "r+") as f:
        for v in f.values():
            v.attrs.pop(NETCDF_ATTR, None)
    model = torch.load(results / "models/cnn.pt", weights_only=True)
    del model[CHECKSUM_KEY]
    torch.save(model, results / "models/cnn.pt")
    out = ta2d_verify(tmp_path)
    assert out.returncode == 0, out.stderr
    assert "7 files read" in out.stdout and "0 with problems" in out.stdout
    line = next(s for s in out.stdout.splitlines() if "no checksums recorded" in s)
    assert line.startswith("3 files") and all(p in line for p in (legacy_chunk.name, "20240401.nc", "cnn.pt"))
    load_model_file(results / "models/cnn.pt")  # still maps


def test_a_damaged_checkpoint_is_not_resumed_from(products, tmp_path):
    current = tmp_path / "current.pt"
    shutil.copy(products["current"], current)
    assert read_checkpoint(current)[0] is not None
    flip_random_byte(current, pt_data_regions(current, "model.", min_bytes=16), np.random.default_rng(4))
    ck, why = read_checkpoint(current)
    assert ck is None and "CRC-32" in why


@pytest.mark.parametrize("mode", ["mapped", "blocks"])
def test_the_loader_checks_each_chunk_the_first_time_it_reads_it(tmp_path, mode):
    """Modes that read x through the file mapping (validation's unshuffled order; shuffled data beyond memory)
    check it too, not only the in-memory copy."""
    shuffled = mode == "blocks"
    row = 19 * 9 * 9 * 4 + 4 * (1 + 7 + 3 + 17 + 1)  # bytes of a sample's x, y, time7, loc, landcover, elev
    # blocks: the 153 samples do not fit the budget, two files do
    order = dict(shuffle_files=shuffled, shuffle_within_file=shuffled, mix_files=1,
                 max_resident_bytes=row * 110 if shuffled else None)
    intact = ChunkBatches(write_chunks(tmp_path / "intact", "train", 3, 50, seed=3), 16, **order)
    assert intact.mode == mode and sum(len(b["y"]) for b in intact) == 50 + 51 + 52

    paths = write_chunks(tmp_path / "bad", "train", 3, 50, seed=2)
    bad = paths[1]
    flip_random_byte(bad, pt_data_regions(bad, "x"), np.random.default_rng(5))
    with pytest.raises(ChunkError, match=rf"{re.escape(str(bad))}: field x: CRC-32"):
        list(ChunkBatches(paths, 16, **order))
    with pytest.raises(ChunkError, match=rf"{re.escape(str(bad))}: field x: CRC-32"):
        ChunkBatches(paths, 16, **order).prepare()  # what make_loader does before starting loader workers
