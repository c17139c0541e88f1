"""ta2d.chunks.contract: file names, CRCs recorded at write time and checked wherever a field is read whole
(`ta2d verify`, `ta2d inspect`, the normalisation statistics, the loader's in-memory copy)."""

from __future__ import annotations

import shutil
import zlib

import numpy as np
import pytest
import torch
from fakes import flip_byte_in_tensor

from ta2d.chunks.contract import (
    CHECKSUM_KEY,
    ChunkError,
    field_crc,
    open_chunk,
    save_tensors,
    stored_checksums,
)
from ta2d.chunks.loader import ChunkBatches
from ta2d.chunks.stats import compute_stats
from ta2d.cli import main as cli
from ta2d.demo.synthetic import make_chunk, write_chunks
from ta2d.plan import chunk_name, parse_chunk_name


def test_chunk_names_round_trip():
    for split, key in [("train", "20240401"), ("val", "2024W14"), ("test", "202404")]:
        assert parse_chunk_name(chunk_name(split, key)) == (split, key)
        assert parse_chunk_name(chunk_name(split, key, ".rejects.csv")) == (split, key)
    assert parse_chunk_name("stats.json") is None
    assert parse_chunk_name("holdout_chunk_20240401.pt") is None


@pytest.mark.parametrize("t", [
    torch.arange(12, dtype=torch.int64).reshape(3, 4),
    torch.linspace(-1, 1, 30, dtype=torch.float16).reshape(3, 10),
    torch.arange(40, dtype=torch.float32).reshape(4, 10)[:, ::2],  # not contiguous: row-major bytes count
    torch.zeros((0, 19, 9, 9)),
    torch.from_numpy(np.zeros((0, 2), dtype=np.int32).reshape(-1, 2)),  # empty, with a stride of 0
])
def test_field_crc_is_the_crc32_of_the_row_major_bytes(t):
    expected = zlib.crc32(np.ascontiguousarray(t.numpy()).tobytes()) & 0xFFFFFFFF
    assert field_crc(t) == f"{expected:08x}"


def test_saved_files_carry_their_crcs_and_load_as_before(tmp_path):
    chunk = make_chunk(50, seed=3)
    path = tmp_path / chunk_name("train", "20240401")
    save_tensors(chunk, path)
    crcs = stored_checksums(path)
    assert set(crcs) == set(chunk)
    assert all(crcs[k] == f"{zlib.crc32(v.numpy().tobytes()) & 0xFFFFFFFF:08x}" for k, v in chunk.items())
    loaded = open_chunk(path)  # the CRCs are not a field
    assert set(loaded) == set(chunk) and CHECKSUM_KEY not in loaded
    assert all(torch.equal(loaded[k], chunk[k]) for k in chunk)


@pytest.fixture
def tree(tmp_path):
    """results/patch_pt with two train chunks and one val chunk, all intact."""
    results = tmp_path / "results"
    train = write_chunks(results / "patch_pt", "train", 2, 200, seed=1)
    val = write_chunks(results / "patch_pt", "val", 1, 100, seed=2)
    return results, train, val


def test_verify_passes_an_intact_tree_and_names_the_corrupt_file_and_field(tree, capsys):
    results, train, _ = tree
    assert cli(["verify", str(results)]) == 0
    assert "3 files read" in capsys.readouterr().out

    flip_byte_in_tensor(train[1], "x")
    assert open_chunk(train[1])["x"].shape[0] > 0  # memory-mapped loading does not notice
    assert cli(["verify", str(results)]) == 1
    out = capsys.readouterr()
    assert "1 with problems" in out.out
    assert str(train[1]) in out.err and "field x: CRC-32" in out.err and str(train[0]) not in out.err

    assert cli(["inspect", str(train[1])]) == 1
    assert "field x: CRC-32" in capsys.readouterr().err


def test_verify_reads_embeddings_and_tiles_too_and_accepts_files_without_crcs(tree, capsys):
    results, train, _ = tree
    emb_dir = results / "embed" / "clay_frozen"
    emb_dir.mkdir(parents=True)
    save_tensors({"emb": torch.randn(20, 8), "y": torch.randn(20)}, emb_dir / chunk_name("train", "20240401"))
    legacy = results / "patch_pt" / chunk_name("test", "20240401")
    torch.save(make_chunk(30, seed=9), legacy)  # written before ta2d recorded CRCs: nothing to check
    assert cli(["verify", str(results)]) == 0
    assert "5 files read" in capsys.readouterr().out
    flip_byte_in_tensor(emb_dir / chunk_name("train", "20240401"), "emb")
    assert cli(["verify", str(results)]) == 1
    assert "field emb: CRC-32" in capsys.readouterr().err


def test_an_empty_results_tree_is_an_error(tmp_path, capsys):
    assert cli(["verify", str(tmp_path)]) == 1
    assert "0 files read" in capsys.readouterr().out


def test_statistics_and_the_in_memory_loader_check_the_crcs(tree, tmp_path):
    _, train, _ = tree
    bad = tmp_path / "bad" / train[0].name
    bad.parent.mkdir()
    shutil.copy(train[0], bad)
    flip_byte_in_tensor(bad, "y")
    with pytest.raises(ChunkError, match=rf"{bad}: field y: CRC-32"):
        compute_stats([train[1], bad])
    shuffled = dict(shuffle_files=True, shuffle_within_file=True, mix_files=0)  # training's default order
    batches = ChunkBatches([train[1], bad], 64, ("x", "y"), **shuffled)
    assert batches.mode == "resident"
    with pytest.raises(ChunkError, match=rf"{bad}: field y: CRC-32"):
        list(batches)
    intact = ChunkBatches(train, 64, ("x", "y"), **shuffled)
    assert sum(len(b["y"]) for b in intact) == sum(open_chunk(p)["y"].shape[0] for p in train)


def _samples(chunk: dict, stn_day_hour: list[tuple[int, str, int]]) -> dict:
    """``chunk`` cut to these samples, each set to (station, UTC day YYYY-MM-DD, hour)."""
    n = len(stn_day_hour)
    out = {k: v[:n].clone() for k, v in chunk.items()}
    out["stn"] = torch.tensor([s for s, _, _ in stn_day_hour], dtype=torch.int32)
    out["time"] = torch.tensor([int(np.datetime64(d, "s").astype(np.int64)) + 3600 * h for _, d, h in stn_day_hour])
    return out


def test_verify_finds_samples_that_leak_between_splits(tmp_path, capsys):
    """Whatever the config: a (station, time) in two files, or a station's UTC day in two splits, is a leak."""
    results = tmp_path / "results"
    patch_pt = results / "patch_pt"
    patch_pt.mkdir(parents=True)
    chunk = make_chunk(10, seed=4)
    train, val, test = (patch_pt / chunk_name(s, "2024-04-01") for s in ("train", "val", "test"))
    save_tensors(_samples(chunk, [(100, "2024-04-01", 0), (101, "2024-04-01", 0), (100, "2024-04-02", 3)]), train)
    # the same day in another split is no leak (another station: a held-out station's samples are in test)
    save_tensors(_samples(chunk, [(102, "2024-04-01", 5), (101, "2024-04-03", 5)]), val)
    assert cli(["verify", str(results)]) == 0
    assert "splits of 5 labelled samples checked" in capsys.readouterr().out

    # station 100's 2024-04-01 in test too (another hour), and train's sample (101, 04-01 00 UTC) repeated
    save_tensors(_samples(chunk, [(100, "2024-04-01", 12), (101, "2024-04-01", 0)]), test)
    assert cli(["verify", str(results)]) == 1
    err = capsys.readouterr().err
    assert str(train) in err and str(test) in err and str(val) not in err
    assert f"1 samples (station, time) also in {test.name} (first: station 101, UTC day 20240401)" in err
    assert f"1 samples (station, time) also in {train.name}" in err
    # (100, 04-01) and (101, 04-01) span train and test: two samples in each file; (100, 04-02) does not
    assert err.count("2 samples of station-days that also have samples in another split (first: station 100") == 2


def test_verify_with_the_config_checks_every_sample_is_in_its_split(tmp_path, capsys):
    """Station 100 is held out and every day from 2024-06-01 is a test day: their samples belong in test."""
    config = tmp_path / "split.yaml"
    config.write_text("split: {holdout_stations: [100], holdout_station_fraction: 0, "
                      "time_block_start: '2024-06-01'}\n")
    results = tmp_path / "results"
    patch_pt = results / "patch_pt"
    patch_pt.mkdir(parents=True)
    chunk = make_chunk(10, seed=5)
    samples = _samples(chunk, [(100, "2024-04-03", 6), (101, "2024-06-05", 6)])
    test = patch_pt / chunk_name("test", "2024-04-01")
    save_tensors(samples, test)
    args = ["verify", str(results), "--config", "config/config.yaml", "--config", str(config)]
    assert cli(args) == 0
    assert "(the config's split rule)" in capsys.readouterr().out

    train = patch_pt / chunk_name("train", "2024-04-01")
    shutil.move(test, train)
    assert cli(args) == 1
    err = capsys.readouterr().err
    assert f"{train}:" in err and "2 samples belong to split test by the config's split rule" in err
