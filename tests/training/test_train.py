"""train_run: loss goes down, checkpoints/metrics, resume equals an uninterrupted run, baselines.

Fine-tuning the encoder (finetune: last_k / full, layer-wise rates) is tested in tests/training/test_finetune.py."""

from __future__ import annotations

import pytest
import torch
from fakes import Killed, kill_after, read_metrics, rerun_killed

from ta2d.chunks.contract import save_tensors
from ta2d.models import load_model
from ta2d.training import METRIC_COLUMNS, predict_chunks, train_run

FAST = {"preset": "tiny", "batch_size": 64, "lr": 3e-3, "head_hidden": 64, "seed": 7}


def test_clay_frozen_run_lowers_the_loss_and_writes_outputs(training_chunks, tmp_path):
    train, val, stats = training_chunks
    out = tmp_path / "run"
    res = train_run({**FAST, "epochs": 4}, train, val, stats, out, progress=False, log=lambda s: None)
    rows = read_metrics(out / "metrics.csv")
    assert tuple(rows[0]) == METRIC_COLUMNS and [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["train_mse"]) < 0.5 * float(rows[0]["train_mse"])
    assert float(rows[-1]["val_mse"]) < 0.7 * float(rows[0]["val_mse"])
    assert float(rows[-1]["val_mse"]) < 0.2  # predicting the mean gives 1 (z-scored TA)
    ck = torch.load(out / "current.pt", weights_only=True)
    for key in (
        "model",
        "optimizer",
        "scheduler",
        "epoch",
        "best_val",
        "stats",
        "run_config",
        "data_fingerprint",
    ):
        assert key in ck
    assert ck["epoch"] == 4 and ck["best_val"] == pytest.approx(res["best_val"])
    assert sorted(p.name for p in (out / "embed").iterdir()) == sorted(p.name for p in train + val)
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["best_val"] == min(float(r["val_mse"]) for r in rows)
    # best.pt alone predicts in °C
    model = load_model(out / "best.pt")
    pred = predict_chunks(model, val, device="cpu")
    rmse = float(((pred["y_pred"] - pred["y"]) ** 2).mean().sqrt())
    assert rmse == pytest.approx(float(rows[int(best["epoch"]) - 1]["val_rmse_k"]), rel=1e-3)


def test_resume_equals_uninterrupted_run(training_chunks, tmp_path):
    train, val, stats = training_chunks
    cfg = {**FAST, "epochs": 3, "model": "cnn", "cnn_channels": [8, 16]}
    train_run(cfg, train, val, stats, tmp_path / "a", progress=False, log=lambda s: None)

    with pytest.raises(Killed):
        train_run(
            cfg,
            train,
            val,
            stats,
            tmp_path / "b",
            progress=False,
            log=lambda s: None,
            on_epoch_end=kill_after(2),
        )
    assert len(read_metrics(tmp_path / "b" / "metrics.csv")) == 2
    res, logs = rerun_killed(cfg, train, val, stats, tmp_path / "b")
    assert res["resumed_from"] == 2 and any("resuming" in s and "epoch 3" in s for s in logs)
    ra, rb = read_metrics(tmp_path / "a" / "metrics.csv"), read_metrics(tmp_path / "b" / "metrics.csv")
    strip = (
        [{k: v for k, v in r.items() if k != "seconds"} for r in ra],
        [{k: v for k, v in r.items() if k != "seconds"} for r in rb],
    )
    assert strip[0] == strip[1]
    for name in ("current.pt", "best.pt"):
        a = torch.load(tmp_path / "a" / name, weights_only=True)["model"]
        b = torch.load(tmp_path / "b" / name, weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)
    # a finished run whose declared outputs were removed gets them back without training
    best_a = (tmp_path / "a" / "best.pt").read_bytes()
    (tmp_path / "a" / "best.pt").unlink()
    (tmp_path / "a" / "metrics.csv").unlink()
    logs.clear()
    train_run(cfg, train, val, stats, tmp_path / "a", progress=False, log=logs.append)
    assert (tmp_path / "a" / "best.pt").read_bytes() == best_a
    again = read_metrics(tmp_path / "a" / "metrics.csv")
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in again] == strip[0]
    assert any("already done" in s for s in logs)


def _weights_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_frozen_encoder_current_pt_holds_the_head_only_and_resumes(training_chunks, tmp_path):
    """current.pt of a frozen-encoder run leaves the encoder out (rebuilt from the run config on resume,
    checked by its fingerprint); best.pt stays self-contained; kill + resume equals an uninterrupted run."""
    train, val, stats = training_chunks
    cfg = {**FAST, "epochs": 3, "patience": 0}
    train_run(cfg, train, val, stats, tmp_path / "a", progress=False, log=lambda s: None)

    b = tmp_path / "b"
    with pytest.raises(Killed):
        train_run(cfg, train, val, stats, b, progress=False, log=lambda s: None, on_epoch_end=kill_after(1))
    cur, best = torch.load(b / "current.pt", weights_only=True), torch.load(b / "best.pt", weights_only=True)
    assert not [k for k in cur["model"] if k.startswith("encoder.")]
    assert [k for k in best["model"] if k.startswith("encoder.")]
    assert set(best["model"]) - set(cur["model"]) == {k for k in best["model"] if k.startswith("encoder.")}
    assert cur["encoder_fingerprint"] == best["encoder_fingerprint"]
    assert (b / "current.pt").stat().st_size < 0.1 * (b / "best.pt").stat().st_size
    load_model(b / "best.pt")  # alone predicts
    with pytest.raises(ValueError, match="no encoder weights.*best.pt"):
        load_model(b / "current.pt")

    res, logs = rerun_killed(cfg, train, val, stats, b)
    assert res["resumed_from"] == 1 and any("resuming" in s and "epoch 2" in s for s in logs)
    strip = [
        [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(d / "metrics.csv")]
        for d in (tmp_path / "a", b)
    ]
    assert strip[0] == strip[1]
    for name in ("current.pt", "best.pt"):
        wa = torch.load(tmp_path / "a" / name, weights_only=True)["model"]
        wb = torch.load(b / name, weights_only=True)["model"]
        assert _weights_equal(wa, wb), name
    pred_a, pred_b = (predict_chunks(load_model(d / "best.pt"), val, device="cpu") for d in (tmp_path / "a", b))
    assert torch.equal(pred_a["y_pred"], pred_b["y_pred"])

    # a current.pt whose encoder fingerprint is not the rebuilt encoder's: start over, saying why
    ck = torch.load(b / "current.pt", weights_only=True)
    ck["encoder_fingerprint"] = "0" * 40
    torch.save(ck, b / "current.pt")
    logs.clear()
    res = train_run(cfg, train, val, stats, b, progress=False, log=logs.append)
    assert res["resumed_from"] is None and res["epochs"] == 3
    assert any("frozen encoder" in s and "differs" in s and "from scratch" in s for s in logs)


def test_frozen_run_restarts_when_the_encoder_checkpoint_changes(training_chunks, tmp_path):
    """clay_ckpt_path is part of the run config, its content is not: the encoder fingerprint catches it."""
    from ta2d.models import ClayEncoder

    train, val, stats = training_chunks
    enc = tmp_path / "enc.pt"
    torch.manual_seed(1)
    torch.save(ClayEncoder.from_preset("tiny").state_dict(), enc)
    cfg = {**FAST, "epochs": 2, "clay_ckpt_path": str(enc)}

    out = tmp_path / "run"
    with pytest.raises(Killed):
        train_run(cfg, train[:1], val[:1], stats, out, progress=False, log=lambda s: None, on_epoch_end=kill_after(1))
    torch.manual_seed(2)
    torch.save(ClayEncoder.from_preset("tiny").state_dict(), enc)  # same path, other weights
    logs = []
    res = train_run(cfg, train[:1], val[:1], stats, out, progress=False, log=logs.append)
    assert res["resumed_from"] is None
    assert any("frozen encoder" in s and "from scratch" in s for s in logs)
    best = torch.load(out / "best.pt", weights_only=True)["model"]
    assert _weights_equal({k: v for k, v in best.items() if k.startswith("encoder.")},
                          {f"encoder.{k}": v for k, v in torch.load(enc, weights_only=True).items()})


def test_changed_data_restarts_from_scratch(training_chunks, tmp_path):
    train, val, stats = training_chunks
    cfg = {**FAST, "epochs": 1, "model": "cnn", "cnn_channels": [8]}
    train_run(cfg, train, val, stats, tmp_path, progress=True, log=lambda s: None)  # tqdm bars on
    logs = []
    res = train_run(cfg, train[:2], val, stats, tmp_path, progress=False, log=logs.append)
    assert res["resumed_from"] is None
    assert any(
        "does not belong to this run" in s and "chunks changed" in s and "from scratch" in s for s in logs
    )
    logs.clear()
    train_run({**cfg, "lr": 1e-3}, train[:2], val, stats, tmp_path, progress=False, log=logs.append)
    assert any("run config changed (lr)" in s for s in logs)


def test_ridge_baseline_through_the_same_code(training_chunks, tmp_path):
    train, val, stats = training_chunks
    train_run(
        {"model": "ridge", "ridge_alpha": 0.1},
        train,
        val,
        stats,
        tmp_path,
        progress=False,
        log=lambda s: None,
    )
    rows = read_metrics(tmp_path / "metrics.csv")
    assert len(rows) == 1
    assert float(rows[0]["val_rmse_k"]) < 0.6  # the synthetic target is linear in centre features + noise 0.3
    model = load_model(tmp_path / "best.pt")
    pred = predict_chunks(model, val, device="cpu")
    assert float(((pred["y_pred"] - pred["y"]) ** 2).mean().sqrt()) == pytest.approx(
        float(rows[0]["val_rmse_k"]), rel=1e-4
    )


def test_run_defaults_equal_the_schema_defaults():
    """The schema is the one copy of the run defaults: every run key has one there, resolve_run_config({})
    returns them (waves_um: null made explicit), and the code's allowed values are the schema's."""
    from ta2d.config import load_schema, validate_config
    from ta2d.models import FINETUNE_MODES, MODEL_KINDS, PATCH_MODES, PRESETS, default_waves
    from ta2d.training import RUN_DEFAULTS, SCHEDULERS, resolve_run_config

    schema = load_schema()
    props = schema["properties"]["train"]["properties"]["runs"]["additionalProperties"]["properties"]
    assert sorted(props) == sorted(RUN_DEFAULTS)
    assert not [k for k, p in props.items() if "default" not in p]
    resolved = resolve_run_config({})
    assert sorted(resolved) == sorted(props)
    for key, p in props.items():
        want = default_waves() if key == "waves_um" and p["default"] is None else p["default"]
        assert resolved[key] == want, key
    for key, allowed in (("model", MODEL_KINDS), ("preset", PRESETS), ("patch_mode", PATCH_MODES),
                         ("scheduler", SCHEDULERS), ("finetune", FINETUNE_MODES)):
        assert sorted(props[key]["enum"]) == sorted(allowed), key
    # what Snakemake's config validation fills in for a run that names no key is what train_run uses
    config = {"period": {"start": "2024-01-01", "end": "2024-01-02"},
              "domain": {"first_line": 1, "last_line": 9, "first_column": 1, "last_column": 9},
              "inputs": {k: {"path": "x"} for k in ("labels", "stations", "static")},
              "train": {"runs": {"r": {}}}}
    filled = validate_config(config, check_files=False)["train"]["runs"]["r"]
    assert resolve_run_config(filled) == resolved


@pytest.mark.parametrize("kind", ["warmup_cosine", "onecycle", "cosine", "none"])
def test_schedules_warm_up_and_decay_per_batch(kind):
    from ta2d.training import make_scheduler

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1e-2)
    sched = make_scheduler(opt, {"epochs": 4, "scheduler": kind, "warmup_epochs": 1.0}, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    if kind == "none":
        assert lrs == [1e-2] * 40
        return
    peak = max(lrs)
    assert peak == pytest.approx(1e-2, rel=2e-3)  # onecycle peaks between two steps
    assert lrs[-1] < 0.01 * peak  # decays to ~0 at the last step
    if kind == "warmup_cosine":
        assert lrs[0] == pytest.approx(1e-3) and lrs.index(peak) == 9  # linear over the first epoch
    if kind == "onecycle":
        assert lrs[0] < 0.1 * peak and 10 <= lrs.index(peak) <= 13  # 30 % of the steps
    if kind == "cosine":
        assert lrs[0] == peak


def test_early_stopping_ends_the_run_and_best_pt_keeps_the_best_epoch(training_chunks, tmp_path):
    train, val, stats = training_chunks
    out = tmp_path / "run"
    # validation labels that are pure noise: the validation MSE stops improving after a few epochs
    noisy_val = []
    for i, p in enumerate(val):
        d = torch.load(p, weights_only=True)
        d["y"] = torch.randn(len(d["y"]), generator=torch.Generator().manual_seed(i)) * 20.0 + 10.0
        save_tensors(d, tmp_path / p.name)  # new labels, new CRCs: a stale crc32 entry would be caught as corrupt
        noisy_val.append(tmp_path / p.name)
    val = noisy_val
    cfg = {**FAST, "model": "cnn", "epochs": 30, "scheduler": "none", "patience": 2}
    res = train_run(cfg, train, val, stats, out, progress=False, log=lambda s: None)
    rows = read_metrics(out / "metrics.csv")
    vals = [float(r["val_mse"]) for r in rows]
    best_epoch = vals.index(min(vals)) + 1
    assert len(rows) == best_epoch + 2 < 30  # stopped `patience` epochs after the best
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["epoch"] == best_epoch and best["best_val"] == pytest.approx(min(vals))
    # a rerun resumes, sees the same stale epochs and trains no further
    again = train_run(cfg, train, val, stats, out, progress=False, log=lambda s: None)
    assert again["resumed_from"] == len(rows) and len(read_metrics(out / "metrics.csv")) == len(rows)
    assert res["epochs"] == len(rows)


def test_gradient_clipping_bounds_the_update(training_chunks, tmp_path):
    """With SGD-like steps bounded by the clip, the first step's weight change is at most lr * clip."""
    train, val, stats = training_chunks
    seen = {}

    def grab(epoch, row):
        seen[epoch] = row

    out = tmp_path / "run"
    cfg = {**FAST, "model": "cnn", "epochs": 1, "grad_clip": 1e-3, "scheduler": "none", "patience": 0}
    train_run(cfg, train, val, stats, out, progress=False, log=lambda s: None, on_epoch_end=grab)
    unclipped = tmp_path / "run2"
    train_run({**cfg, "grad_clip": 0}, train, val, stats, unclipped, progress=False, log=lambda s: None)
    a = torch.load(out / "best.pt", weights_only=True)["optimizer"]["state"]
    b = torch.load(unclipped / "best.pt", weights_only=True)["optimizer"]["state"]
    # AdamW's second moment holds the (clipped) squared gradients: clipping makes them tiny
    va = max(float(s["exp_avg_sq"].max()) for s in a.values())
    vb = max(float(s["exp_avg_sq"].max()) for s in b.values())
    assert va < 1e-6 < vb


def test_dropped_feature_groups_carry_no_information(training_chunks):
    """A run that drops a group gives the same prediction whatever that group's values are."""
    from ta2d.models import build_model
    from ta2d.training import load_stats, resolve_run_config

    train, _, stats = training_chunks
    d = torch.load(train[0], weights_only=True)
    batch = {k: d[k][:16] for k in ("x", "time7", "loc", "landcover_onehot", "elev")}
    changed = dict(batch)
    changed["time7"] = batch["time7"].clone()
    changed["time7"][:, 0:2] = torch.randn(16, 2)
    changed["elev"] = batch["elev"] + 500.0
    for kind in ("cnn", "ridge", "clay_transfer"):
        keep = build_model(resolve_run_config({**FAST, "model": kind}), load_stats(stats, train)).eval()
        drop = build_model(resolve_run_config({**FAST, "model": kind, "drop_features": ["doy", "station_height"]}),
                           load_stats(stats, train)).eval()
        if kind == "ridge":
            for m in (keep, drop):
                m.weight.normal_()
        with torch.no_grad():
            assert torch.allclose(drop(batch), drop(changed)), kind
            assert not torch.allclose(keep(batch), keep(changed)), kind
    with pytest.raises(ValueError, match="drop_features.*weekday"):
        resolve_run_config({"drop_features": ["weekday"]})


def test_inference_side_never_imports_the_training_loop():
    """ta2d.training.embed, evaluation and maps use run_config/inference only; the loop imports ta2d.training.embed."""
    import subprocess
    import sys

    code = (
        "import sys, ta2d.training.embed, ta2d.evaluation.evaluate, ta2d.maps.archive, ta2d.maps.predict,"
        " ta2d.maps.kriging, ta2d.maps.plots, ta2d.maps.dense, ta2d.models.model_file, ta2d.training.inference;"
        "from ta2d.training import predict_chunks, resolve_device, load_stats, RUN_DEFAULTS;"
        "assert 'ta2d.training.loop' not in sys.modules, 'loop imported';"
        "from ta2d.training import train_run, METRIC_COLUMNS, make_scheduler, data_fingerprint"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_head_alone_needs_no_embeddings(training_chunks, tmp_path):
    """drop_features [embedding]: no embedding files (train_run) and no embed_chunk jobs (the same rule)."""
    from ta2d.config import uses_embedding_cache
    from ta2d.training import resolve_run_config

    train, val, stats = training_chunks
    cfg = {**FAST, "epochs": 1, "drop_features": ["embedding"]}
    res = train_run(cfg, train[:1], val[:1], stats, tmp_path, progress=False, log=lambda s: None)
    assert res["epochs"] == 1 and not (tmp_path / "embed").exists()
    assert not uses_embedding_cache(resolve_run_config(cfg))
    assert uses_embedding_cache(resolve_run_config(FAST))


@pytest.mark.parametrize("model", ["cnn", "clay_transfer"])  # chunk files, and embedding files (a frozen encoder)
def test_train_stations_trains_on_exactly_the_kept_stations(training_chunks, tmp_path, model):
    """train_stations 0.4: the run's training files hold every sample of the stations whose hash(seed, id) falls
    below 0.4 (computed here from the chunks with the hash written out) and no other; 0.2's stations are a subset."""
    import hashlib

    import numpy as np

    train, val, stats = training_chunks

    def kept(stn: int, fraction: float) -> bool:
        digest = hashlib.blake2b(f"7:train_stn:{stn}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 < fraction

    stn = np.concatenate([torch.load(p, weights_only=True)["stn"].numpy() for p in train])
    cfg = {**FAST, "model": model, "epochs": 1, "train_stations": 0.4, "cnn_channels": [4]}
    res = train_run(cfg, train, val, stats, tmp_path / "run", progress=False, log=lambda s: None)
    assert res["epochs"] == 1
    subset = sorted((tmp_path / "run" / "train_stations").glob("*.pt"))
    assert len(subset) == len(train)
    got = np.concatenate([torch.load(p, weights_only=True)["stn"].numpy() for p in subset])
    want = stn[[kept(int(s), 0.4) for s in stn]]
    assert 0 < len(got) < len(stn) and sorted(got.tolist()) == sorted(want.tolist())
    assert {s for s in stn if kept(int(s), 0.2)} <= set(got.tolist())
