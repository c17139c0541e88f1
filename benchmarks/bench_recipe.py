"""Training recipes side by side on a built demo: which defaults of train.runs learn best.

Trains one model kind (default: cnn) under several recipes on the same train/val chunks and scores each
on the same test samples, per validation scheme, against the demo's observable floor:

    .venv/bin/python benchmarks/bench_recipe.py                  # after `make demo`, in the repository
    .venv/bin/python benchmarks/bench_recipe.py --root /tmp/demo1 --recipes seed,global,default

Prints one line per recipe: epochs run, wall seconds, best val RMSE and test RMSE per scheme (K).
"""

from __future__ import annotations

import argparse
import glob
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ta2d.models import load_model
from ta2d.splits import HEADLINE_SCHEMES, scheme_of
from ta2d.training import predict_chunks, train_run

# Each recipe overrides the run defaults (ta2d.training.RUN_DEFAULTS); "seed" is the old system's loop.
RECIPES = {
    "seed": {"mix_files": 1, "batch_size": 512, "lr": 1e-3, "scheduler": "cosine", "epochs": 20,
             "patience": 0, "grad_clip": 0, "warmup_epochs": 0},
    "global": {"mix_files": 0, "batch_size": 512, "lr": 1e-3, "scheduler": "cosine", "epochs": 20,
               "patience": 0, "grad_clip": 0, "warmup_epochs": 0},
    "default": {},
    "no_patience_20": {"epochs": 20, "patience": 0},
    "onecycle_20": {"scheduler": "onecycle", "epochs": 20, "patience": 0},
    "lr1e-3_20": {"lr": 1e-3, "epochs": 20, "patience": 0},
    "batch512_20": {"batch_size": 512, "epochs": 20, "patience": 0},
    "no_doy_20": {"epochs": 20, "patience": 0, "drop_features": ["doy", "month"]},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=".", help="a directory where the demo workflow has run")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--recipes", default=",".join(RECIPES))
    a = ap.parse_args()
    root = Path(a.root)
    cfg = yaml.safe_load((root / "config/config.yaml").read_text()) if (root / "config/config.yaml").exists() \
        else yaml.safe_load(Path("config/config.yaml").read_text())
    chunks = {s: sorted(glob.glob(str(root / f"results/patch_pt/{s}_chunk_*.pt"))) for s in ("train", "val", "test")}
    truth = pd.read_csv(root / cfg["demo"]["out_dir"] / "truth/labels_truth.csv")  # an absolute out_dir wins
    stats = root / "results/stats.json"
    print(f"{a.model}: {len(chunks['train'])} train, {len(chunks['val'])} val, {len(chunks['test'])} test chunks")
    header = f"{'recipe':16s} {'epochs':>6s} {'sec':>6s} {'val':>6s} " + " ".join(f"{s:>17s}" for s in HEADLINE_SCHEMES)
    print(header)
    floors_printed = False
    for name in a.recipes.split(","):
        run = {"model": a.model, **RECIPES[name]}
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            res = train_run(run, chunks["train"], chunks["val"], stats, tmp, progress=False, log=lambda s: None)
            sec = time.perf_counter() - t0
            model = load_model(Path(tmp) / "best.pt")
            pred = predict_chunks(model, chunks["test"], device="cpu")
            val = float(np.sqrt(res["best_val"])) * float(model.normalizer.y_std)
        df = pd.DataFrame({k: pred[k].numpy() for k in ("y", "y_pred", "stn", "time")})
        df["scheme"] = scheme_of(df["stn"], df["time"], cfg["split"])
        df = df.merge(truth.rename(columns={"time_utc": "time"})[["stn", "time", "ta_true_c"]], on=["stn", "time"])
        if not floors_printed:
            floors = [np.sqrt(np.mean((g["y"] - g["ta_true_c"]) ** 2)) for g in
                      (df[df["scheme"] == s] for s in HEADLINE_SCHEMES)]
            print(f"{'floor':16s} {'':>6s} {'':>6s} {'':>6s} " + " ".join(f"{f:17.3f}" for f in floors))
            floors_printed = True
        rmse = [np.sqrt(np.mean((g["y_pred"] - g["y"]) ** 2))
                for g in (df[df["scheme"] == s] for s in HEADLINE_SCHEMES)]
        print(f"{name:16s} {res['epochs']:6d} {sec:6.0f} {val:6.3f} " + " ".join(f"{r:17.3f}" for r in rmse),
              flush=True)


if __name__ == "__main__":
    main()
