"""A full disk while a product is written (ta2d.atomic.atomic_path): one DiskFullError that names the file, the
file system (mount point) and its free space; no file under the final name and no temp file left; an older
file under that name left as it was; and the same write succeeds once there is space again.

Real file systems, no mocks: a small tmpfs (ENOSPC; needs root to mount, skipped otherwise) and, for anyone,
a child process under RLIMIT_FSIZE with SIGXFSZ ignored (EFBIG). The products go through their real writers:
a chunk (ta2d.chunks.contract.save_tensors, torch.save underneath: no errno in its error), a scene
(ta2d.ingest.scene.write_scene, h5netcdf/h5py: "errno = 28" in the text), a map (ta2d.maps.archive.write_day:
built in memory, then written as plain bytes) and a checkpoint
(ta2d.training.checkpoints.save_best: best.pt and its hard link .best.pt.keep).

Writes onto a full disk run in a child process: after a failed close HDF5 keeps a half-closed file that crashes the
interpreter at exit (https://github.com/h5py/h5py/issues/914), which must not take pytest with it. The child reports
what it caught and leaves with os._exit, past that crash.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
import yaml
from conftest import REPO, run_snakemake

from ta2d.atomic import DiskFullError, atomic_path
from ta2d.chunks.contract import open_chunk, save_tensors
from ta2d.demo.synthetic import make_workdir
from ta2d.grid import Domain, domain_lonlat
from ta2d.ingest.scene import SlotData, read_scene, write_scene
from ta2d.maps.archive import day_dataset, write_day
from ta2d.periods import period_slots
from ta2d.training.checkpoints import save_best

TESTS = Path(__file__).resolve().parent
DISK_BYTES = 8 << 20
LEFT_FREE = 256 << 10  # what the filler leaves: less than any product below
SCENE_DOMAIN = Domain(900, 929, 2700, 2729)  # 30 x 30 pixels: ~1.4 MB of noise a day, which deflate cannot shrink
SCENE_DAY = "20240401"
MAP_DOMAIN = Domain(900, 1059, 2700, 2859)  # 160 x 160 pixels: a day of noise packed to int16 still ~0.8 MB deflated


# --- the products, each through its real writer; `big` writes one larger than LEFT_FREE -----------------------

def write_chunk(path: Path, big: bool) -> None:
    n = 400_000 if big else 1_000  # float32: 1.6 MB or 4 kB
    gen = torch.Generator().manual_seed(int(big))
    save_tensors({"x": torch.randn(n, generator=gen), "y": torch.arange(n, dtype=torch.float32)}, path)


def write_scene_file(path: Path, big: bool) -> None:
    rng = np.random.default_rng(int(big))
    shape = SCENE_DOMAIN.shape

    def read_slot(slot):
        return SlotData("ok", rng.normal(280, 10, (10, *shape)).astype(np.float32),
                        rng.random((6, *shape), dtype=np.float32), sources=[f"slot {slot:%H}"])

    slots = period_slots(SCENE_DAY, "D", [0])
    write_scene(path, SCENE_DAY, slots if big else slots[:1], SCENE_DOMAIN, read_slot, {}, progress=False)


def write_checkpoint(path: Path, big: bool) -> None:
    n = 400_000 if big else 1_000
    save_best({"model": {"w": torch.randn(n, generator=torch.Generator().manual_seed(int(big)))}, "epoch": 3}, path)


def write_map_file(path: Path, big: bool) -> None:
    rng = np.random.default_rng(int(big))
    times = pd.date_range("2024-04-01", periods=24 if big else 1, freq="h", tz="UTC")
    lon, lat = domain_lonlat(MAP_DOMAIN)
    ta = rng.normal(15, 8, (len(times), *MAP_DOMAIN.shape)).astype(np.float32)
    mask = np.ones(ta.shape, dtype=np.uint8)
    write_day(day_dataset(times, MAP_DOMAIN, lat, lon, ta, mask, ["ok"] * len(times)), path)


WRITERS = {"chunk": write_chunk, "scene": write_scene_file, "checkpoint": write_checkpoint, "map": write_map_file}
TARGETS = {"chunk": "patch_pt/train_chunk_20240401.pt", "scene": "scenes/20240401.nc", "checkpoint": "runs/cnn/best.pt",
           "map": "maps/best/20240401.nc"}


def read_back(product: str, path: Path) -> int:
    """The number of values (chunk, checkpoint) or slots (scene, map) in a product: proof that it is whole."""
    if product == "chunk":
        return int(open_chunk(path)["x"].numel())
    if product == "scene":
        with read_scene(path) as ds:
            return int(ds.sizes["time"])
    if product == "map":
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            return int(ds.sizes["time"])
    return int(torch.load(path, weights_only=True)["model"]["w"].numel())


def write_in_child(product: str, path: Path, fsize_limit: int | None = None) -> dict:
    """Write the big `product` at `path` in a child process; what it raised (type, errno, message), or {}."""
    code = """
import json, os, resource, signal, sys
from pathlib import Path
from test_disk_full import WRITERS
from ta2d.atomic import DiskFullError
product, path, limit = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
if limit:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
try:
    WRITERS[product](path, big=True)
    report = {}
except Exception as err:
    report = {"type": type(err).__name__, "disk_full": isinstance(err, DiskFullError), "errno": err.errno
              if isinstance(err, OSError) else None, "message": str(err)}
print("REPORT " + json.dumps(report), flush=True)
os._exit(0)  # past HDF5's crash at exit after a failed close (https://github.com/h5py/h5py/issues/914)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", code, product, str(path), str(fsize_limit or 0)],
                          capture_output=True, text=True, timeout=300, env=env)
    reports = [line[len("REPORT "):] for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert proc.returncode == 0 and reports, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}"
    report = json.loads(reports[0])
    report["stderr"] = proc.stderr
    return report


UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def stated_free_space(message: str) -> tuple[float, float]:
    """(free, total) bytes as the message states them (rounded to its 0.1 unit)."""
    m = re.search(r"has ([\d.]+) (\w+) free of ([\d.]+) (\w+) \(statvfs of ", message)
    assert m, message
    return float(m[1]) * UNITS[m[2]], float(m[3]) * UNITS[m[4]]


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def older_files(path: Path) -> dict[str, bytes]:
    """The bytes of every file in the product's folder (best.pt comes with its hidden hard link)."""
    return {p.name: p.read_bytes() for p in path.parent.iterdir() if p.is_file()}


def assert_disk_full_report(report: dict, target: Path, mount: Path, err_no: int) -> None:
    assert report.get("disk_full"), report
    assert report["errno"] == err_no, report
    msg = report["message"]
    assert msg.startswith(f"[Errno {err_no}] disk full: cannot write {target}: "), msg
    assert f"The file system mounted at {mount} has " in msg and "(statvfs of " in msg, msg
    assert "Nothing was written under that name" in msg and "then rerun: the next run completes" in msg, msg
    # the one error: no pile of h5py "Exception ignored" tracebacks around it
    assert "Traceback" not in report["stderr"], report["stderr"][-3000:]


# --- a small tmpfs: ENOSPC ---------------------------------------------------------------------------------

def mount_tmpfs(folder: Path, options: str) -> Path:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (the RLIMIT_FSIZE tests cover a full disk without it)")
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {folder}: {proc.stderr.strip()}")
    return folder


def unmount(folder: Path) -> None:
    if os.path.ismount(folder) and subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], check=True)  # something still holds a file: detach it


@pytest.fixture
def small_disk(tmp_path):
    disk = mount_tmpfs(tmp_path / "disk", f"size={DISK_BYTES}")
    yield disk
    unmount(disk)


def fill(disk: Path, leave: int) -> Path:
    """A file that leaves `leave` bytes free on `disk`."""
    filler = disk / "filler"
    st = os.statvfs(disk)
    with open(filler, "wb") as fh:
        fh.write(bytes(st.f_bavail * st.f_frsize - leave))
    return filler


@pytest.mark.parametrize("product", list(WRITERS))
def test_full_disk_is_one_clear_error_and_the_rerun_completes(product, small_disk):
    target = small_disk / TARGETS[product]
    WRITERS[product](target, big=False)
    before = older_files(target)
    filler = fill(small_disk, LEFT_FREE)

    report = write_in_child(product, target)
    assert_disk_full_report(report, target, small_disk, errno.ENOSPC)
    assert older_files(target) == before  # nothing under the final name changed, no temp file left
    free, total = stated_free_space(report["message"])
    assert total == DISK_BYTES and free < LEFT_FREE, report["message"]

    filler.unlink()  # space freed: the same write completes
    WRITERS[product](target, big=True)
    assert read_back(product, target) == (24 if product in ("scene", "map") else 400_000)
    assert listing(target.parent) == sorted(before)


def test_full_disk_in_this_process_chunk_and_checkpoint(small_disk):
    """The error itself, raised here (torch writers: no HDF5 to crash the process)."""
    for product in ("chunk", "checkpoint"):
        target = small_disk / TARGETS[product]
        WRITERS[product](target, big=False)
        before = older_files(target)
        filler = fill(small_disk, LEFT_FREE)
        with pytest.raises(DiskFullError) as info:
            WRITERS[product](target, big=True)
        err = info.value
        assert isinstance(err, OSError) and err.errno == errno.ENOSPC
        assert err.target == target and err.mount_point == small_disk and err.free_bytes < LEFT_FREE
        assert err.__suppress_context__  # the log shows this message, not torch's traceback
        assert older_files(target) == before
        del info, err
        filler.unlink()
        WRITERS[product](target, big=True)
        assert read_back(product, target) == 400_000


def test_no_free_inode_is_a_disk_full_error(tmp_path):
    disk = mount_tmpfs(tmp_path / "disk", "size=1m,nr_inodes=8")
    try:
        n = 0
        with pytest.raises(OSError) as full:
            while True:  # use every inode
                (disk / f"f{n}").touch()
                n += 1
        assert full.value.errno == errno.ENOSPC
        target = disk / "stats.json"
        with pytest.raises(DiskFullError, match=re.escape(f"cannot write {target}: no space left on the device")) \
                as info:
            with atomic_path(target) as tmp:
                tmp.write_text("{}")
        assert "no free inodes" in str(info.value) and f"mounted at {disk}" in str(info.value)
        assert not target.exists()
        folder = disk / "scenes"  # mkdir needs an inode too
        with pytest.raises(DiskFullError, match=re.escape(f"cannot write {folder}: no space left on the device")):
            with atomic_path(folder / "20240401.nc"):
                pass
    finally:
        unmount(disk)


def test_other_errors_on_a_full_disk_stay_what_they_are(small_disk):
    fill(small_disk, 0)
    target = small_disk / "stats.json"
    for error in (ValueError("bad value"), KeyError("y"), PermissionError(errno.EACCES, "Permission denied")):
        with pytest.raises(type(error)) as info:
            with atomic_path(target):
                raise error
        assert info.value is error
    assert listing(small_disk) == ["filler"]


def test_an_error_without_errno_on_a_disk_with_space_stays_what_it_is(tmp_path):
    """The probe write that asks the kernel leaves nothing behind either."""
    target = tmp_path / "out" / "chunk.pt"
    for error in (RuntimeError("killed"), OSError("Unable to synchronously create dataset (name already exists)")):
        with pytest.raises(type(error)) as info:
            with atomic_path(target):
                raise error
        assert info.value is error
    assert listing(target.parent) == []


# --- RLIMIT_FSIZE in a child: EFBIG, no root needed --------------------------------------------------------

@pytest.mark.parametrize("product", list(WRITERS))
def test_file_size_limit_is_one_clear_error_and_the_rerun_completes(product, tmp_path):
    target = tmp_path / "results" / TARGETS[product]
    WRITERS[product](target, big=False)
    before = older_files(target)
    mount = Path(os.path.realpath(target.parent))
    while not os.path.ismount(mount):
        mount = mount.parent

    report = write_in_child(product, target, fsize_limit=512 << 10)
    assert_disk_full_report(report, target, mount, errno.EFBIG)
    assert "file-size limit of 512.0 KiB (ulimit -f)" in report["message"], report["message"]
    assert older_files(target) == before

    WRITERS[product](target, big=True)  # without the limit
    assert read_back(product, target) == (24 if product in ("scene", "map") else 400_000)
    assert listing(target.parent) == sorted(before)


# --- the workflow: a calibrate job on a full results/scenes --------------------------------------------------

@pytest.mark.slow
def test_workflow_full_disk_stops_the_job_with_the_message_and_the_rerun_completes(tiny_demo, tmp_path):
    work = make_workdir(tmp_path / "wf")
    config = yaml.safe_load((REPO / "config/test/tiny.yaml").read_text())
    config["demo"] = {"enabled": False}
    config["inputs"] = {k: tiny_demo["config"]["inputs"][k] for k in ("l1b", "labels", "stations", "static")}
    config["inputs"]["background"] = None  # not config/config.yaml's demo files: the demo is off
    (work / "config/test/tiny.yaml").write_text(yaml.safe_dump(config))
    scenes = mount_tmpfs(work / "results/scenes", f"size={DISK_BYTES}")
    target = scenes / "20240401.nc"
    try:
        filler = fill(scenes, 64 << 10)  # a day's scene is ~1 MB
        failed = run_snakemake(work, "results/scenes/20240401.nc", check=False)
        assert failed.returncode != 0
        log = (work / "logs/calibrate/20240401.log").read_text()
        assert f"DiskFullError: [Errno 28] disk full: cannot write {target}: no space left on the device. " \
               f"The file system mounted at {scenes} has " in log, log[-3000:]
        free, total = stated_free_space(log)
        assert free < 64 << 10 and total == DISK_BYTES, log[-3000:]
        assert "site-packages" not in log, log[-3000:]  # the traceback ends in ta2d, not deep in h5py
        assert "h5py/_objects.pyx" not in failed.stderr, failed.stderr[-3000:]
        assert listing(scenes) == ["filler"]

        filler.unlink()
        run_snakemake(work, "results/scenes/20240401.nc")
        with read_scene(target) as ds:
            assert ds.sizes["time"] == 24
        assert listing(scenes) == ["20240401.nc", "20240401.status.csv"]
    finally:
        unmount(scenes)
