"""ta2d.chunks.loader.ChunkBatches: coverage, order and values of batches in every order and every gathering mode."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch

from ta2d.chunks.loader import ChunkBatches, ChunkError, make_loader, open_chunk

FIELDS = ("x", "y", "time", "loc")
ROW_BYTES = 19 * 9 * 9 * 4 + 4 + 8 + 3 * 4  # bytes of one sample of FIELDS


def chunk(file_no: int, n: int) -> dict[str, torch.Tensor]:
    """`time` names the sample (file * 1000 + index); the other fields are derived from it."""
    t = torch.arange(n, dtype=torch.int64) + 1000 * file_no
    return {
        "x": (t.float()[:, None, None, None] + torch.arange(19 * 81).float().view(1, 19, 9, 9) / 2048),
        "y": t.float() / 7,
        "time7": torch.zeros(n, 7),
        "loc": torch.stack([t.float(), -t.float(), t.float() / 3], 1),
        "time": t,
        "stn": torch.zeros(n, dtype=torch.int32),
    }


def write(d, sizes) -> list:
    paths = []
    for i, n in enumerate(sizes):
        p = d / f"train_chunk_{i:02d}.pt"
        torch.save(chunk(i, n), p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Twelve files of unequal sizes (one empty; 270 samples), so batches straddle files and blocks."""
    return write(tmp_path_factory.mktemp("chunks"), [23, 40, 17, 0, 31, 26, 9, 35, 12, 28, 19, 30])


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    """Six files of 24 samples: blocks of two files are exactly six batches of 8."""
    return write(tmp_path_factory.mktemp("aligned"), [24] * 6)


ORDERS = {  # shuffle_files, shuffle_within_file, mix_files
    "sequential": (False, False, 1),
    "shuffled files": (True, False, 1),
    "per-file shuffle": (True, True, 1),
    "block shuffle": (True, True, 3),
    "global shuffle": (True, True, 0),
    "blocks in file order": (False, True, 2),
}
# blocks: two blocks of the three largest files (2 x 106 samples) fit, all 270 samples do not
BUDGETS = {"resident": None, "blocks": 215 * ROW_BYTES, "mapped": 0}


def loader(paths, order, budget="resident", batch=16, **kw):
    sf, sw, mix = ORDERS[order]
    with warnings.catch_warnings():  # shuffled and mapped: warns that this is slow beyond the page cache
        warnings.simplefilter("ignore")
        return ChunkBatches(paths, batch, FIELDS, sf, sw, mix, max_resident_bytes=BUDGETS[budget], **kw)


def times(batches) -> torch.Tensor:
    return torch.cat([b["time"] for b in batches]) if batches else torch.empty(0, dtype=torch.int64)


@pytest.mark.parametrize("order", ORDERS)
def test_every_sample_once_per_epoch_in_every_order_and_mode(files, order):
    ref = torch.cat([open_chunk(p, ["time"])["time"] for p in files])
    cases = [*itertools.product(BUDGETS, [(False, 7), (True, 64)]), ("blocks", (False, 500))]  # 500: one batch
    for budget, (drop_last, batch) in cases:
        b = loader(files, order, budget, batch, drop_last=drop_last, seed=3)
        if ORDERS[order][1]:
            expected_mode = "mapped" if budget == "blocks" and ORDERS[order][2] == 0 else budget
            assert b.mode == expected_mode, (budget, order)
        b.set_epoch(1)
        got = list(b)
        assert len(got) == len(b)
        sizes = [len(x["time"]) for x in got]
        assert all(s == batch for s in sizes[:-1]) and all(0 < s <= batch for s in sizes[-1:])
        t = times(got)
        if drop_last:
            assert len(t) == len(ref) // batch * batch and len(torch.unique(t)) == len(t)
            assert torch.isin(t, ref).all()
        else:
            assert torch.equal(t.sort().values, ref.sort().values)  # each sample exactly once
        if order == "sequential":
            assert torch.equal(t, ref[: len(t)])


def test_batches_equal_direct_indexing_of_the_files(files):
    chunks = [open_chunk(p, FIELDS) for p in files]
    for order, budget in itertools.product(ORDERS, BUDGETS):
        b = loader(files, order, budget, 16, seed=11)
        b.set_epoch(2)
        for got, (fid, idx) in zip(b, b.plan(), strict=True):
            for k in FIELDS:
                ref = torch.stack([chunks[f][k][i] for f, i in zip(fid.tolist(), idx.tolist(), strict=True)])
                assert torch.equal(got[k], ref), (order, budget, k)
            assert got["x"].dtype == torch.float32 and got["x"].shape[1:] == (19, 9, 9)
            again = b.gather(fid.flip(0), idx.flip(0))  # any (file, index) pairs, returned sorted
            assert all(torch.equal(again[k], got[k]) for k in FIELDS)


def test_modes_give_identical_batches(files):
    for order in ORDERS:
        runs = []
        for budget in BUDGETS:
            b = loader(files, order, budget, 10, seed=5)
            b.set_epoch(4)
            runs.append([x["time"] for x in b])
        assert all(len(r) == len(runs[0]) for r in runs)
        for r in runs[1:]:
            assert all(torch.equal(p, q) for p, q in zip(runs[0], r, strict=True)), order


def test_order_is_deterministic_per_seed_and_epoch_and_differs_across_epochs(files):
    for order in ORDERS:
        if order == "sequential":
            continue
        b, other = loader(files, order, seed=7), loader(files, order, seed=8)
        b.set_epoch(1)
        e1 = times(list(b))
        b.set_epoch(2)
        e2 = times(list(b))
        b.set_epoch(1)
        assert torch.equal(times(list(b)), e1)
        assert not torch.equal(e1, e2)
        fresh = loader(files, order, "blocks", seed=7)  # another instance, another mode: the same order
        fresh.set_epoch(1)
        assert torch.equal(times(list(fresh)), e1)
        other.set_epoch(1)
        assert not torch.equal(times(list(other)), e1)


@pytest.mark.parametrize("budget", ["resident", "blocks"])
def test_block_shuffle_keeps_each_batch_within_its_block(aligned, budget):
    b = ChunkBatches(aligned, 8, ("time",), True, True, 2, seed=1,
                     max_resident_bytes=None if budget == "resident" else 2 * 48 * 8)
    assert b.mode == budget
    orders = []
    for epoch in (1, 2, 3):
        b.set_epoch(epoch)
        got = [x["time"] // 1000 for x in b]  # file of each sample
        assert len(got) == 18
        blocks = []
        for k in range(0, 18, 6):  # a block of two files = six batches of 8
            files = torch.cat(got[k : k + 6])
            counts = torch.bincount(files, minlength=6)
            assert sorted(counts.tolist()) == [0, 0, 0, 0, 24, 24]  # exactly two whole files
            blocks.append(tuple(sorted(torch.nonzero(counts).flatten().tolist())))
            assert any(len(torch.unique(x)) == 2 for x in got[k : k + 6])  # their samples are mixed
        assert sorted(f for blk in blocks for f in blk) == list(range(6))
        orders.append(blocks)
    assert len({tuple(o) for o in orders}) > 1  # file order and blocks change per epoch

    # unaligned: a batch mixes two blocks only where one block ends and the next begins
    b = ChunkBatches(aligned, 10, ("time",), True, True, 2, seed=1)
    b.set_epoch(1)
    batch_files = [set((x["time"] // 1000).tolist()) for x in b]
    assert len(batch_files) == 15
    block_of = {}  # stream position of batch k: [10 k, 10 k + 10); block j: [48 j, 48 j + 48)
    for k, fs in enumerate(batch_files):
        first, last = 10 * k // 48, (10 * k + 9) // 48
        if first == last:  # inside one block: only that block's two files
            assert len(fs) <= 2
            for f in fs:
                assert block_of.setdefault(f, first) == first
    assert sorted(block_of) == list(range(6)) and sorted(block_of.values()) == [0, 0, 1, 1, 2, 2]


def test_kept_batches_and_views_are_not_overwritten(files):
    for budget in ("resident", "blocks"):
        b = loader(files, "global shuffle" if budget == "resident" else "block shuffle", budget, 8, seed=2)
        b.set_epoch(1)
        ref = [x["time"].clone() for x in b]
        views, kept = [], []
        for k, x in enumerate(b):
            if k % 3 == 0:
                views.append((k, x["time"][1:]))  # a view keeps the storage, not the tensor
            elif k % 3 == 1:
                kept.append((k, x))
        for k, v in views:
            assert torch.equal(v, ref[k][1:])
        for k, x in kept:
            assert torch.equal(x["time"], ref[k])


def test_workers_serve_the_same_batches(files):
    for budget, order in (("resident", "global shuffle"), ("blocks", "block shuffle")):
        b = loader(files, order, budget, 8, seed=1)
        b.set_epoch(3)
        ref = [x["time"] for x in b]
        got = [x["time"] for x in make_loader(b, num_workers=2)]
        assert len(got) == len(ref) and all(torch.equal(p, q) for p, q in zip(ref, got, strict=True))


def test_files_that_disagree_are_named(tmp_path):
    paths = write(tmp_path, [5, 5])
    d = chunk(1, 5)
    d["loc"] = d["loc"][:, :2]
    torch.save(d, paths[1])
    with pytest.raises(ChunkError, match="train_chunk_01.pt: field loc"):
        ChunkBatches(paths, 4, FIELDS)


def test_a_shuffled_block_beyond_the_budget_warns(files):
    with pytest.warns(UserWarning, match="exceeds the memory budget"):
        b = ChunkBatches(files, 8, FIELDS, True, True, 0, max_resident_bytes=10 * ROW_BYTES)
    assert b.mode == "mapped"


def test_no_files():
    b = ChunkBatches([], 4, FIELDS, True, True, 0)
    assert len(b) == 0 and list(b) == [] and b.n_samples == 0
