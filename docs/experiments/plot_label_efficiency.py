"""The label-efficiency figure of label-efficiency.md from a results tree's metrics.csv (after the experiment):

    .venv/bin/python docs/experiments/plot_label_efficiency.py results/eval/metrics.csv \
        docs/experiments/label_efficiency.png
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

KINDS = {"cnn": "cnn", "gbt": "gbt", "ridge": "ridge", "clay_frozen": "Clay, random init", "clay_mae": "Clay, MAE"}
FRACTIONS = {"_s10": 0.1, "_s30": 0.3, "": 1.0}
SCHEMES = {"held_out_days": "held-out days", "held_out_stations": "held-out stations", "time_block": "time block"}

metrics = pd.read_csv(sys.argv[1])
fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True, constrained_layout=True)
for ax, (scheme, title) in zip(axes, SCHEMES.items(), strict=True):
    rows = metrics[metrics["scheme"] == scheme].set_index("run")
    for kind, label in KINDS.items():
        points = [(f, rows.loc[kind + suffix, "rmse"]) for suffix, f in FRACTIONS.items()
                  if kind + suffix in rows.index]
        ax.plot(*zip(*points, strict=True), marker="o", label=label)
    ax.axhline(rows["floor"].iloc[0], color="0.5", ls="--", lw=1, label="observable floor")
    ax.set(xscale="log", xticks=list(FRACTIONS.values()), xticklabels=["10 %", "30 %", "100 %"], title=title,
           xlabel="training stations (run key train_stations)")
axes[0].set_ylabel("test RMSE (K)")
axes[-1].legend(fontsize=8)
fig.savefig(sys.argv[2], dpi=100)
