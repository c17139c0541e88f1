"""The parse-time inventory refresh trusts a slot directory whose mtime is as the inventory's sidecar recorded it.

Stub archives of empty, validly named L1B files in the NOAA layout (inputs.l1b.subdir "%Y%m/%d/%H"), 3 days.
Directory mtimes are set with os.utime wherever a test needs them settled, so no test depends on timing;
listings and file stats are counted through os.scandir and os.stat.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fakes import tiny_config

from ta2d.channels import ALL_CHANNELS, l1b_filename
from ta2d.cli import main
from ta2d.ingest import inventory
from ta2d.ingest.archive import period_inventory_text, refresh_inventories, write_inventory
from ta2d.periods import period_keys
from ta2d.plan import Plan

DAYS = ("20240401", "20240402", "20240403")
HOUR_S = 3600


def stamp(day: str, hour: int) -> str:
    return f"{day}{hour:02d}00"


def slot_dir(raw: Path, day: str, hour: int) -> Path:
    return raw / day[:6] / day[6:] / f"{hour:02d}"


def l1b_file(raw: Path, day: str, hour: int, channel: str) -> Path:
    return slot_dir(raw, day, hour) / l1b_filename(channel, "fd", stamp(day, hour))


def settle(raw: Path, age_s: int) -> None:
    """Every directory of the archive last changed `age_s` ago (distinct ages: distinct mtimes)."""
    t = time.time() - age_s
    for d, _, _ in os.walk(raw):
        os.utime(d, (t, t))


class Archive:
    """A stub archive, its config (tiny.yaml's period and chunking: 3 daily periods) and results/inventory."""

    def __init__(self, root: Path):
        self.raw = root / "raw"
        self.config = tiny_config(root, inputs={"l1b": {"dir": "raw"}})
        self.inputs = {k: self.config["inputs"][k] for k in ("kind", "l1b", "calibrated")}
        self.period = self.config["period"]
        self.keys = period_keys(self.period["start"], self.period["end"], "D")
        self.plan = Plan.from_config(self.config)
        self.results = root / "results"
        self.inventory_dir = self.results / "inventory"
        assert self.keys == list(DAYS)

    def make(self, skip_files=(), skip_dirs=()) -> None:
        for day in DAYS:
            for hour in range(24):
                if (day, hour) in skip_dirs:
                    continue
                slot_dir(self.raw, day, hour).mkdir(parents=True)
                for ch in ALL_CHANNELS:
                    if (day, hour, ch) not in skip_files:
                        l1b_file(self.raw, day, hour, ch).touch()

    def write_all(self) -> None:
        for key in self.keys:
            write_inventory(self.inputs, key, "D", self.period, self.tsv(key))

    def refresh(self, full: bool = False) -> int:
        return refresh_inventories(self.inputs, self.plan, self.inventory_dir, full=full)

    def tsv(self, key: str) -> Path:
        return self.inventory_dir / f"{key}.tsv"

    def state(self) -> dict:
        """(bytes, mtime_ns) of every inventory and sidecar."""
        return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(self.inventory_dir.iterdir())}


@pytest.fixture
def archive(tmp_path):
    """3 days, every file present except ir105 of 2024-04-02 05:00 and the whole folder 2024-04-03 07;
    all inventories written by the real code with every directory settled (an hour old)."""
    arc = Archive(tmp_path)
    arc.make(skip_files={("20240402", 5, "ir105")}, skip_dirs={("20240403", 7)})
    settle(arc.raw, HOUR_S)
    arc.write_all()
    return arc


@pytest.fixture
def fs_calls(monkeypatch):
    """Paths given to os.scandir and os.stat while the test runs."""
    calls = {"scandir": [], "stat": []}
    real_scandir, real_stat = os.scandir, os.stat

    def scandir(path="."):
        calls["scandir"].append(os.fspath(path))
        return real_scandir(path)

    def stat(path, *args, **kwargs):
        calls["stat"].append(os.fspath(path) if isinstance(path, str | os.PathLike) else path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(inventory.os, "scandir", scandir)
    monkeypatch.setattr(inventory.os, "stat", stat)
    return calls


def test_the_sidecar_records_each_slot_directory(archive):
    lines = Path(inventory.dirs_path(archive.tsv("20240403"))).read_text().splitlines()
    assert lines[0].startswith(inventory.DIRS_VERSION)
    assert lines[1].startswith("# inventory\t")
    dirs = dict(line.split("\t", 1) for line in lines[2:])
    assert len(dirs) == 24
    assert dirs["202404/03/07"] == "missing"
    st = os.stat(slot_dir(archive.raw, "20240403", 6))
    assert dirs["202404/03/06"] == f"{st.st_mtime_ns}\t{st.st_ino}"


def test_an_unchanged_archive_is_not_listed(archive, fs_calls):
    before = archive.state()
    assert archive.refresh() == 0
    assert fs_calls["scandir"] == []
    raw = os.fspath(archive.raw)
    stated_raw = [p for p in fs_calls["stat"] if str(p).startswith(raw)]
    assert len(stated_raw) == 3 * 24, "one stat per slot directory"
    assert all(os.path.isdir(p) or not os.path.exists(p) for p in stated_raw), "no raw file is stat'ed"
    assert archive.state() == before


def test_a_file_added_rewrites_only_its_period(archive):
    before = archive.state()
    l1b_file(archive.raw, "20240402", 5, "ir105").touch()
    assert archive.refresh() == 1
    after = archive.state()
    assert "202404020500\tir105\t" in archive.tsv("20240402").read_text()
    assert after["20240402.tsv"] != before["20240402.tsv"]
    for key in ("20240401", "20240403"):
        for name in (f"{key}.tsv", f"{key}.dirs"):
            assert after[name] == before[name], name
    assert archive.tsv("20240402").read_text() == period_inventory_text(archive.inputs, "20240402", "D",
                                                                        archive.period)


def test_a_file_renamed_into_place_is_seen(archive):
    target = l1b_file(archive.raw, "20240401", 12, "vi006")
    staged = archive.raw / "incoming.part"
    staged.write_bytes(b"reprocessed")
    os.replace(staged, target)  # how a reprocessed file arrives: the slot directory's mtime moves
    assert archive.refresh() == 1
    row = [line for line in archive.tsv("20240401").read_text().splitlines() if line.endswith(
        "\t".join(["", f"202404/01/12/{target.name}", "11", str(target.stat().st_mtime_ns)]))]
    assert len(row) == 1


@pytest.mark.parametrize("new_bytes", [b"", b"longer content"], ids=["same_size", "other_size"])
def test_an_in_place_edit_needs_the_full_refresh(archive, tmp_path, new_bytes):
    target = l1b_file(archive.raw, "20240403", 3, "ir087")
    old_text = archive.tsv("20240403").read_text()
    with open(target, "r+b") as fh:  # rewritten in place: same name, same inode, the directory untouched
        fh.truncate(0)
        fh.write(new_bytes)
    os.utime(target, ns=(time.time_ns(), os.stat(target).st_mtime_ns + 1_000_000_000))
    before = archive.state()
    assert archive.refresh() == 0, "the fast refresh cannot see it (documented)"
    assert archive.state() == before

    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(archive.config))
    assert main(["refresh-inventories", "--config", str(config_path), "--results", str(archive.results)]) == 0
    new_text = archive.tsv("20240403").read_text()
    assert new_text != old_text
    assert new_text == period_inventory_text(archive.inputs, "20240403", "D", archive.period)
    for key in ("20240401", "20240402"):
        assert archive.state()[f"{key}.tsv"] == before[f"{key}.tsv"]


def test_a_slot_directory_that_appears_later_is_seen(archive):
    d = slot_dir(archive.raw, "20240403", 7)
    d.mkdir()
    for ch in ALL_CHANNELS:
        l1b_file(archive.raw, "20240403", 7, ch).touch()
    settle(d, 2 * HOUR_S)  # an old mtime of its own: only its existence tells
    assert archive.refresh() == 1
    assert sum(line.startswith("202404030700\t") for line in archive.tsv("20240403").read_text().splitlines()) == 16


def test_a_slot_directory_replaced_by_one_with_the_same_mtime_is_seen(archive):
    old = slot_dir(archive.raw, "20240401", 9)
    mtime = old.stat().st_mtime_ns
    staged = archive.raw / "staged"
    staged.mkdir()
    (staged / l1b_file(archive.raw, "20240401", 9, "ir105").name).write_bytes(b"only one file now")
    os.rename(old, archive.raw / "old")
    os.rename(staged, old)
    os.utime(old, ns=(mtime, mtime))  # e.g. copied with its times kept: only the inode tells
    assert archive.refresh() == 1
    assert sum(line.startswith("202404010900\t") for line in archive.tsv("20240401").read_text().splitlines()) == 1


def test_an_inventory_without_sidecar_is_listed_once(archive, fs_calls):
    Path(inventory.dirs_path(archive.tsv("20240401"))).unlink()  # as written by older code
    before = archive.tsv("20240401").stat().st_mtime_ns
    assert archive.refresh() == 0
    assert len(fs_calls["scandir"]) == 24, "the one period without a sidecar, listed"
    assert Path(inventory.dirs_path(archive.tsv("20240401"))).is_file()
    assert archive.tsv("20240401").stat().st_mtime_ns == before, "same bytes: untouched"
    fs_calls["scandir"].clear()
    assert archive.refresh() == 0
    assert fs_calls["scandir"] == []


def test_a_sidecar_of_other_listing_parameters_or_another_inventory_is_not_trusted(archive, fs_calls):
    archive.inputs["l1b"]["slot_minutes"] = [0, 30]
    archive.refresh()
    assert len(fs_calls["scandir"]) == 3 * 24
    fs_calls["scandir"].clear()
    os.utime(archive.tsv("20240402"))  # e.g. snakemake --touch: the sidecar no longer vouches for it
    assert archive.refresh() == 0
    assert len(fs_calls["scandir"]) == 24


def test_a_directory_changed_just_before_the_listing_is_listed_again(archive, fs_calls):
    d = slot_dir(archive.raw, "20240402", 5)
    l1b_file(archive.raw, "20240402", 5, "ir105").touch()  # mtime now: within the mtime step of the listing
    assert archive.refresh() == 1
    assert "202404/02/05\tunsettled" in Path(inventory.dirs_path(archive.tsv("20240402"))).read_text()
    # a file added in the same mtime step: the directory's mtime does not move
    mtime = d.stat().st_mtime_ns
    extra = d / l1b_filename("ir105", "fd", "202404020500").replace("fd020ge", "fd010ge")  # a second resolution
    extra.touch()
    os.utime(d, ns=(mtime, mtime))
    fs_calls["scandir"].clear()
    assert archive.refresh() == 1, "listed again, as the directory was unsettled"
    assert extra.name in archive.tsv("20240402").read_text()
    settle(d, HOUR_S // 2)
    archive.refresh()
    fs_calls["scandir"].clear()
    assert archive.refresh() == 0
    assert fs_calls["scandir"] == [], "settled: trusted again"


def test_calibrated_inputs_stat_every_file_every_time(tmp_path):
    cal = tmp_path / "cal"
    cal.mkdir()
    inputs = {"kind": "calibrated", "l1b": {}, "calibrated": {"dir": str(cal), "bt_pattern": "%Y%m%d%H_bt.nc"}}
    period = {"start": "2024-04-01", "end": "2024-04-01"}
    for hour in range(24):
        (cal / f"20240401{hour:02d}_bt.nc").write_bytes(b"x")
    out = tmp_path / "inventory"
    write_inventory(inputs, "20240401", "D", period, out / "20240401.tsv")
    assert not Path(inventory.dirs_path(out / "20240401.tsv")).exists()
    (cal / "2024040103_bt.nc").write_bytes(b"rewritten in place")
    plan = Plan(start=period["start"], end=period["end"], freq="D", split_cfg={})
    assert refresh_inventories(inputs, plan, out) == 1
    table = pd.read_csv(out / "20240401.tsv", sep="\t", dtype=str)
    assert table.loc[table["path"] == "2024040103_bt.nc", "size"].item() == "18"


def test_a_slot_inventory_records_content_hashes_and_hashes_only_what_changed(tmp_path, monkeypatch):
    """A slot's inventory (freq "S", the mapping service) holds each file's BLAKE2b: the same bytes delivered
    again (new mtime, new inode) leave it byte-identical; changed bytes change it. A file is hashed only when
    its stat moved since the last listing."""
    import hashlib

    raw = tmp_path / "raw"
    inputs = {"kind": "l1b", "l1b": {"dir": str(raw), "subdir": "%Y%m/%d/%H", "area": "fd", "slot_minutes": [0]}}
    files = {ch: l1b_file(raw, "20240401", 5, ch) for ch in ALL_CHANNELS}
    for i, (ch, path) in enumerate(files.items()):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{ch} {i}".encode() * 100)
    key, out = "20240401T0500", tmp_path / "inv/20240401T0500.tsv"
    period = {"start": "2024-04-01", "end": "2024-04-01"}
    hashed = []
    real_hash = inventory._content_hash
    monkeypatch.setattr(inventory, "_content_hash", lambda p: hashed.append(p) or real_hash(p))

    assert write_inventory(inputs, key, "S", period, out)
    table = inventory.read_inventory(out)
    assert len(table) == len(files) and len(hashed) == len(files)
    for rel, digest in zip(table["path"], table["blake2b"], strict=True):  # an independent hash of each file
        assert digest == hashlib.blake2b((raw / rel).read_bytes(), digest_size=16).hexdigest()
    text, mtime = out.read_text(), out.stat().st_mtime_ns

    hashed.clear()
    assert not write_inventory(inputs, key, "S", period, out) and hashed == []  # nothing moved: no file read
    # delivered again with the same bytes, by rename (new inode, new mtime): re-hashed, the inventory untouched
    ir105 = files["ir105"]
    ir105.with_suffix(".part").write_bytes(ir105.read_bytes())
    os.replace(ir105.with_suffix(".part"), ir105)
    assert not write_inventory(inputs, key, "S", period, out)
    assert hashed == [str(ir105)] and out.read_text() == text and out.stat().st_mtime_ns == mtime
    # changed bytes of the same size: a new hash, the inventory rewritten
    ir105.write_bytes(ir105.read_bytes()[::-1])
    assert write_inventory(inputs, key, "S", period, out)
    old, new = (dict(zip(t["channel"], t["blake2b"], strict=True)) for t in (table, inventory.read_inventory(out)))
    assert {ch for ch in old if old[ch] != new[ch]} == {"ir105"}
