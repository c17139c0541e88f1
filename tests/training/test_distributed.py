"""Data-parallel training (run key gpus, ta2d.training.distributed) on the CPU with gloo, and bench_gpu.py.

The 2-process runs go through ``launch`` as rule train does (torchrun --standalone, one subprocess);
about 10 s each on 2 cores.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from fakes import read_metrics

from ta2d.chunks.loader import CHUNK_FIELDS, ChunkBatches
from ta2d.models import load_model
from ta2d.training import launch, resolve_run_config, train_run
from ta2d.training.distributed import RankBatches, global_batch_size, share
from ta2d.training.launch import KILL_ENV
from ta2d.training.loop import loader_workers
from ta2d.training.run_config import run_identity

REPO = Path(__file__).resolve().parents[2]
# 303 training samples in batches of 64: 4 full batches and one of 47 (23 + 24 on two ranks); val 121 = 64 + 57
CFG = {"model": "cnn", "cnn_channels": [8, 16], "head_hidden": 32, "batch_size": 64, "lr": 3e-3, "epochs": 3,
       "seed": 7, "device": "cpu", "patience": 0}


@pytest.mark.parametrize("world", [2, 3])
def test_rank_shares_partition_every_batch(training_chunks, world):
    """The ranks' shares are contiguous slices of each batch's plan, together exactly the batch."""
    train, _, _ = training_chunks
    fields = (*CHUNK_FIELDS, "time")
    b = ChunkBatches(train, 64, fields, shuffle_files=True, shuffle_within_file=True, mix_files=0, seed=3)
    ranks = [RankBatches(b, r, world) for r in range(world)]
    times = [torch.load(p, weights_only=True)["time"] for p in train]
    for epoch in (1, 2):
        for r in ranks:
            r.set_epoch(epoch)  # the wrapped ChunkBatches is shared: the same plan for all
        whole = list(b.plan())
        per_rank = [list(r) for r in ranks]
        plans = [list(r.plan()) for r in ranks]
        assert all(len(p) == len(whole) == len(b) for p in per_rank)
        for k, (f, i) in enumerate(whole):
            n = len(f)
            assert n == global_batch_size(k, 64, b.n_samples)
            assert torch.equal(torch.cat([p[k][0] for p in plans]), f)  # contiguous slices, in rank order
            assert torch.equal(torch.cat([p[k][1] for p in plans]), i)
            got = torch.cat([p[k]["time"] for p in per_rank]).sort().values
            want = torch.stack([times[int(fi)][int(ii)] for fi, ii in zip(f, i, strict=True)]).sort().values
            assert torch.equal(got, want)
            assert [len(p[k]["y"]) for p in per_rank] == [hi - lo for lo, hi in (share(n, r, world)
                                                                                 for r in range(world))]
            assert all(p[k]["x"].shape[1:] == (19, 9, 9) for p in per_rank)
    # a batch smaller than the world: empty shares, or one stand-in sample when training
    tiny = ChunkBatches(train[:1], 1000, fields)
    assert [len(next(iter(RankBatches(tiny, r, 200)))["y"]) for r in (0, 1)] == [0, 1]
    assert len(next(iter(RankBatches(tiny, 0, 200, pad_empty=True)))["y"]) == 1


def test_two_processes_equal_one_and_resume_after_a_kill(training_chunks, tmp_path, monkeypatch):
    """gpus: 2 on the CPU (gloo) has the per-epoch losses of one process with the same global batch; rank 0
    alone logs and writes; a run killed after epoch 2 resumes under DDP and ends where the 1-process run does."""
    train, val, stats = training_chunks
    quiet = dict(progress=False, log=lambda s: None)
    ref = tmp_path / "one"
    train_run(CFG, train, val, stats, ref, **quiet)

    out = tmp_path / "two"
    logs: list[str] = []
    monkeypatch.setenv(KILL_ENV, "2")
    with pytest.raises(RuntimeError, match="data-parallel training .2 processes. failed"):
        launch({**CFG, "gpus": 2}, train, val, stats, out, threads=2, log=logs.append)
    assert len(read_metrics(out / "metrics.csv")) == 2
    assert torch.load(out / "current.pt", weights_only=True)["epoch"] == 2
    assert sum(line.startswith("epoch 1:") for line in logs) == 1, logs  # rank 0 alone logs
    assert {p.name for p in out.iterdir()} <= {"best.pt", ".best.pt.keep", "current.pt", "metrics.csv",
                                               ".ddp_args.json"}, sorted(p.name for p in out.iterdir())

    monkeypatch.delenv(KILL_ENV)
    (out / "best.pt").unlink()  # Snakemake removes a job's declared outputs before a rerun
    (out / "metrics.csv").unlink()
    logs.clear()
    res = launch({**CFG, "gpus": 2}, train, val, stats, out, threads=2, log=logs.append)
    assert res["resumed_from"] == 2 and res["gpus"] == 2 and res["epochs"] == 3
    assert any("resuming" in s and "epoch 3" in s for s in logs), logs
    assert sum(line.startswith("epoch 3:") for line in logs) == 1, logs
    assert sorted(p.name for p in out.iterdir()) == [".best.pt.keep", "best.pt", "current.pt", "metrics.csv"]

    one, two = read_metrics(ref / "metrics.csv"), read_metrics(out / "metrics.csv")
    assert [r["epoch"] for r in two] == ["1", "2", "3"]
    for a, b in zip(one, two, strict=True):
        assert float(a["lr"]) == float(b["lr"])
        for key in ("train_mse", "val_mse"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-5), (a["epoch"], key)
    wa = torch.load(ref / "best.pt", weights_only=True)["model"]
    wb = torch.load(out / "best.pt", weights_only=True)["model"]
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], rtol=1e-3, atol=1e-5) for k in wa)
    load_model(out / "best.pt")  # alone predicts: no DDP "module." prefix


def test_run_keys_gpus_compile_num_workers():
    """gpus / compile / num_workers are not part of the run identity; gpus > 1 is refused for fitted models."""
    base = resolve_run_config({})
    assert base["gpus"] == 1 and base["compile"] is False and base["num_workers"] == "auto"
    other = resolve_run_config({"gpus": 4, "compile": True, "num_workers": 3})
    assert run_identity(other) == run_identity(base)
    for kind in ("ridge", "gbt"):
        with pytest.raises(ValueError, match="fitted in one process"):
            resolve_run_config({"model": kind, "gpus": 2})
    with pytest.raises(ValueError, match="num_workers"):
        resolve_run_config({"num_workers": "many"})
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert loader_workers("auto", cpu, 16) == 0 and loader_workers(2, cpu, 16) == 2
    assert [loader_workers("auto", cuda, t) for t in (1, 2, 4, 64)] == [0, 1, 3, 8]


def test_bench_gpu_runs_on_the_cpu_in_seconds(capsys):
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "benchmarks" / "bench_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = bench
    spec.loader.exec_module(bench)
    rows = bench.main(["--preset", "tiny", "--steps", "5", "--batch-size", "32", "--device", "cpu", "--threads", "1"])
    out = capsys.readouterr().out
    assert {r["mode"] for r in rows} == {"frozen", "finetune"} and all(r["samples_per_s"] > 0 for r in rows)
    assert "samples/s" in out and "frozen" in out and "finetune" in out


def test_a_frozen_clay_run_with_the_head_basis_trains_alike_on_two_processes(training_chunks, tmp_path):
    """head_decorrelate under DDP: every rank fits the head basis from the same embedding files (rank 0 embeds
    them first), so two processes end with rank 0's basis and the losses of one process."""
    train, val, stats = training_chunks
    cfg = {"model": "clay_transfer", "preset": "tiny", "head_hidden": 32, "batch_size": 64, "lr": 3e-3,
           "epochs": 2, "seed": 5, "device": "cpu", "patience": 0, "head_decorrelate": True}
    quiet = dict(progress=False, log=lambda s: None)
    train_run(cfg, train, val, stats, tmp_path / "one", **quiet)
    launch({**cfg, "gpus": 2}, train, val, stats, tmp_path / "two", threads=2, **quiet)
    one, two = read_metrics(tmp_path / "one/metrics.csv"), read_metrics(tmp_path / "two/metrics.csv")
    for a, b in zip(one, two, strict=True):
        for key in ("train_mse", "val_mse"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-5), (a["epoch"], key)
    wa = torch.load(tmp_path / "one/best.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "two/best.pt", weights_only=True)["model"]
    assert torch.allclose(wa["emb_basis"], wb["emb_basis"], atol=1e-6)
    assert torch.allclose(wa["emb_center"], wb["emb_center"], atol=1e-6)
    assert not torch.equal(wa["emb_basis"], torch.eye(len(wa["emb_basis"])))  # fitted, not the identity
