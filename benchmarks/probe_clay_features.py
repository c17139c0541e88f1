"""What does a TA head need from an encoder, and do an encoder's frozen features carry it?

Run on a results tree whose chunks are built (after ``make demo``, or on a real archive's tree if the
splits fit in memory). Every head is the same MLP (2 x 256, AdamW 2e-3, one-cycle, 20 epochs, batch 256,
seeded) on the same samples; RMSE in K on val and test:

* ``head alone``: the side features and the station pixel (what every clay_transfer head sees);
* ``+ patch means NxN``: plus the mean of every plane over the central NxN pixels. The gap between these
  two rows is what spatial context is worth on these labels, and what an encoder has to deliver;
* how precisely it has to deliver it (``--precision``): the 5x5 means with Gaussian noise added so that
  they are known only to a given R^2, and which bands' means the head needs (each left out in turn;
  the bands whose absence costs most are listed). An encoder's linear readout has to reach that R^2 on
  those bands to be worth its cost;
* per ``--encoder NAME=JSON`` (a clay_transfer run config: patch_mode, pool, encoder_from, clay_ckpt_path
  ...): the head plus the frozen embedding, fed whole (LayerNormed: ``head_embed_dim: 0``, no rotation) and through
  a 16-wide linear bottleneck (``head_embed_dim: 16``), LayerNormed or in its principal axes on the train
  split (``head_decorrelate``, the default); how well a linear map of the embedding recovers
  the 9x9 patch means of the 16 spectral planes (test R^2: min, median, and of the bands the head needs
  most), and the head given what that map reads out instead of the embedding;
* where precision is lost, the encoder or the head: per encoder, its patch embedding (layer 0, before the
  transformer: a linear map of the pixels, so the patch means are in it exactly), pooled like the output
  (mean + station token), standardised, through the same bottleneck; against the 5x5 means themselves
  through it (a reference row). If the head misses what layer 0 holds exactly, a bottleneck trained by
  AdamW on many collinear features is the loss, not the transformer;
* for an encoder from a pretrain checkpoint with a token per pixel (``pixel*`` modes): the MAE's
  in-fill of the station pixel from the other tokens, against the plain mean of its 24 neighbours
  (RMS error in normalised units, median over the bands): a pretraining that in-fills worse than the
  mean of the neighbours has not learnt the smooth fields the labels depend on.

    .venv/bin/python benchmarks/probe_clay_features.py --root . \\
        --encoder random_px5='{"patch_mode": "pixel5", "pool": "cls_mean_centre"}' \\
        --encoder mae_px5='{"patch_mode": "pixel5", "pool": "cls_mean_centre", "encoder_from": "mae_px5"}'
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ta2d.channels import ALL_CHANNELS
from ta2d.chunks.contract import open_chunk
from ta2d.config import encoder_from_path
from ta2d.models import build_model
from ta2d.models.mae import ClayDecoder, load_state_slice
from ta2d.models.ta_model import (
    N_SPECTRAL,
    PIXEL_WINDOW,
    Normalizer,
    center_pixels,
    centre_tokens,
    clay_grid_side,
    mlp,
    side_features,
)
from ta2d.training.head_basis import embedding_moments, principal_axes
from ta2d.training.pretrain import tile_inputs
from ta2d.training.run_config import resolve_run_config

FIELDS = ("x", "time7", "loc", "landcover_onehot", "y", "elev")
SPLITS = ("train", "val", "test")


def load_split(root: Path, split: str) -> dict[str, torch.Tensor]:
    parts = [open_chunk(p) for p in sorted((root / "results/patch_pt").glob(f"{split}_chunk_*.pt"))]
    parts = [p for p in parts if len(p["y"])]
    # chunks built with inputs.background carry it, and a normaliser from their stats.json reads it
    fields = FIELDS + (("background",) if parts and all("background" in p for p in parts) else ())
    return {k: torch.cat([p[k].float() if k == "x" else p[k] for p in parts]) for k in fields}


def patch_means(norm: Normalizer, x: torch.Tensor, window: int) -> torch.Tensor:
    c, h = x.shape[-1] // 2, window // 2
    return norm.norm_x(x)[:, :, c - h : c + h + 1, c - h : c + h + 1].mean(dim=(2, 3))


def fit_head(data: dict, feats: dict, norm: Normalizer, bottleneck: int = 0, epochs: int = 20, seed: int = 0):
    """Train the probe head on feats["train"] (+ an optional linear bottleneck on feats[...]["emb"])."""
    torch.manual_seed(seed)
    base = {s: feats[s]["base"] for s in SPLITS}
    emb = {s: feats[s].get("emb") for s in SPLITS}
    n_emb = 0 if emb["train"] is None else (bottleneck or emb["train"].shape[1])
    proj = torch.nn.Linear(emb["train"].shape[1], bottleneck) if bottleneck and n_emb else torch.nn.Identity()
    head = mlp(base["train"].shape[1] + n_emb, 256)
    params = list(head.parameters()) + list(proj.parameters())
    opt = torch.optim.AdamW(params, 2e-3)
    y = norm.norm_y(data["train"]["y"])
    steps = epochs * -(-len(y) // 256)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)

    def predict(s, idx=None):
        b = base[s] if idx is None else base[s][idx]
        if emb[s] is None:
            return head(b).squeeze(1)
        e = emb[s] if idx is None else emb[s][idx]
        return head(torch.cat([b, proj(e)], dim=1)).squeeze(1)

    for _ in range(epochs):
        order = torch.randperm(len(y))
        for i in range(0, len(y), 256):
            idx = order[i : i + 256]
            loss = F.mse_loss(predict("train", idx), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        return [float((norm.denorm_y(predict(s)) - data[s]["y"]).pow(2).mean().sqrt()) for s in ("val", "test")]


def embed_all(model, data: dict, batch: int = 1024) -> dict[str, torch.Tensor]:
    out = {}
    with torch.no_grad():
        for s in SPLITS:
            d = data[s]
            out[s] = torch.cat([model.embed({k: v[i : i + batch] for k, v in d.items()})
                                for i in range(0, len(d["y"]), batch)])
    return out


def layer0_features(model, data: dict, batch: int = 1024) -> dict[str, torch.Tensor]:
    """The encoder's patch tokens before the transformer (its patch embedding's output), mean over the tokens and
    the station token(s) side by side, standardised with the train split's statistics."""
    grabbed = {}
    hook = model.encoder.patch_embedding.register_forward_hook(lambda m, i, o: grabbed.__setitem__("x0", o))
    out = {}
    try:
        with torch.no_grad():
            for s in SPLITS:
                d, parts = data[s], []
                for i in range(0, len(d["y"]), batch):
                    model.embed({k: v[i : i + batch] for k, v in d.items()})
                    x0 = grabbed["x0"]
                    centre = centre_tokens(math.isqrt(x0.shape[1]))
                    parts.append(torch.cat([x0.mean(dim=1), x0[:, centre].mean(dim=1)], dim=1))
                out[s] = torch.cat(parts)
    finally:
        hook.remove()
    mean, std = out["train"].mean(dim=0), out["train"].std(dim=0).clamp_min(1e-6)
    return {s: (v - mean) / std for s, v in out.items()}


def linear_readout(emb: dict, target: dict) -> tuple[torch.Tensor, dict]:
    """A least-squares map (with intercept) from the train embedding to ``target``: its test R^2 per column,
    and what it reads out of every split's embedding."""
    def design(e):
        return torch.cat([e.double(), torch.ones(len(e), 1, dtype=torch.float64)], dim=1)
    w = torch.linalg.lstsq(design(emb["train"]), target["train"].double()).solution
    read = {s: (design(e) @ w).float() for s, e in emb.items()}
    res = target["test"].double() - read["test"].double()
    return 1.0 - res.var(dim=0) / target["test"].double().var(dim=0), read


def infill_errors(model, preset: str, ckpt: str, data: dict, norm: Normalizer, batch: int = 512
                  ) -> tuple[float, float]:
    """Median over bands of the RMS error (normalised units, test split) of the MAE's in-fill of the station
    pixel (its token hidden, every other token visible) and of the plain mean of its 8 / 24 neighbours."""
    mode = model.patch_mode
    window = PIXEL_WINDOW[mode] or data["test"]["x"].shape[-1]
    grid = clay_grid_side(data["test"]["x"].shape[-1], mode) // 8
    decoder = ClayDecoder.from_preset(preset, model.encoder.dim)
    load_state_slice(decoder, torch.load(ckpt, map_location="cpu", weights_only=True), "model.decoder.", ckpt,
                     "the Clay decoder")
    decoder.eval()
    (centre,) = centre_tokens(grid)  # a pixel mode's grid is odd: the station pixel's own token
    d = data["test"]
    fills = []
    with torch.no_grad():
        for i in range(0, len(d["y"]), batch):
            pixels, t, ll, gsd = tile_inputs({k: d[k][i : i + batch] for k in ("x", "time7", "loc")}, norm, mode)
            b = len(pixels)
            keep = torch.tensor([j for j in range(grid * grid) if j != centre]).expand(b, -1)
            hidden = torch.tensor([[centre]]).expand(b, -1)
            enc = model.encoder(pixels, t, ll, gsd, model.waves, keep=keep)
            pred = decoder(enc, keep, hidden, t, ll, gsd, model.waves, grid)[:, centre]
            fills.append(pred.reshape(b, N_SPECTRAL, -1).mean(dim=-1))
    xn = norm.norm_x(d["x"])[:, :N_SPECTRAL]
    c, h = xn.shape[-1] // 2, window // 2
    station = xn[:, :, c, c]
    block = xn[:, :, c - h : c + h + 1, c - h : c + h + 1]
    ring = (block.sum(dim=(2, 3)) - station) / (window * window - 1)
    def rms(a):
        return float((a - station).pow(2).mean(dim=0).sqrt().median())
    return rms(torch.cat(fills)), rms(ring)


def precision_rows(data: dict, base: dict, norm: Normalizer, levels: list[float], row) -> list[int]:
    """The head given the 5x5 means known only to each R^2 of ``levels`` (seeded Gaussian noise scaled by each
    band's train std), then the bands whose means the head misses most when each is left out: the bands an
    encoder must carry to that precision. Returns the indices of the (up to) two most needed bands."""
    if not levels:
        return []
    means = {s: patch_means(norm, data[s]["x"], 5)[:, :N_SPECTRAL] for s in SPLITS}
    spread = means["train"].std(dim=0)
    gen = torch.Generator().manual_seed(0)
    for r2 in levels:
        noisy = {s: m + (1.0 - r2) ** 0.5 * spread * torch.randn(m.shape, generator=gen) for s, m in means.items()}
        row(f"+ patch means 5x5 of the 16 bands, known to R^2 {r2}",
            {s: {"base": torch.cat([base[s], noisy[s]], dim=1)} for s in SPLITS})
    full = fit_head(data, {s: {"base": torch.cat([base[s], means[s]], dim=1)} for s in SPLITS}, norm)[0]
    cost = []
    for b in range(N_SPECTRAL):
        keep = [i for i in range(N_SPECTRAL) if i != b]
        val = fit_head(data, {s: {"base": torch.cat([base[s], means[s][:, keep]], dim=1)} for s in SPLITS}, norm)[0]
        cost.append(val - full)
    order = sorted(range(N_SPECTRAL), key=lambda b: -cost[b])
    ranked = ", ".join(f"{ALL_CHANNELS[b]} +{cost[b]:.3f} K" for b in order[:4])
    print(f"| the bands whose 5x5 mean the head needs most (val RMSE without it, against {full:.3f} K with all 16) "
          f"| | | {ranked} | |", flush=True)
    return order[:2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("."), help="folder holding results/ (patch_pt, stats.json)")
    ap.add_argument("--encoder", action="append", default=[], metavar="NAME=JSON",
                    help="a clay_transfer run config whose frozen features to probe (repeatable)")
    ap.add_argument("--windows", default="3,5,9", help="patch-mean windows of the reference rows")
    ap.add_argument("--precision", default="0.9999,0.999,0.99",
                    help="R^2 levels at which to probe noisy 5x5 means (empty: skip them and the band ranking)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    stats = json.loads((args.root / "results/stats.json").read_text())
    norm = Normalizer.from_stats(stats)
    data = {s: load_split(args.root, s) for s in SPLITS}
    base = {s: torch.cat([side_features(data[s], norm), norm.norm_x(center_pixels(data[s]))[:, :N_SPECTRAL]], dim=1)
            for s in SPLITS}
    print(f"samples: train {len(data['train']['y'])}, val {len(data['val']['y'])}, test {len(data['test']['y'])}")
    print("| probe | val RMSE (K) | test RMSE (K) | note | s |\n|---|---:|---:|---|---:|")

    def row(name, feats, note="", bottleneck=0):
        t0 = time.perf_counter()
        val, test = fit_head(data, feats, norm, bottleneck)
        print(f"| {name} | {val:.3f} | {test:.3f} | {note} | {time.perf_counter() - t0:.0f} |", flush=True)

    row("head alone (side features + station pixel)", {s: {"base": base[s]} for s in SPLITS})
    for w in (int(v) for v in args.windows.split(",") if v):
        row(f"+ patch means {w}x{w} (all 19 planes)",
            {s: {"base": torch.cat([base[s], patch_means(norm, data[s]["x"], w)], dim=1)} for s in SPLITS})
    needed = precision_rows(data, base, norm, [float(v) for v in args.precision.split(",") if v], row)
    means5 = {s: patch_means(norm, data[s]["x"], 5)[:, :N_SPECTRAL] for s in SPLITS}
    row("+ patch means 5x5 of the 16 bands, through the 16-wide bottleneck",
        {s: {"base": base[s], "emb": means5[s]} for s in SPLITS}, bottleneck=16)
    target = {s: patch_means(norm, data[s]["x"], data[s]["x"].shape[-1])[:, :N_SPECTRAL] for s in SPLITS}
    for spec in args.encoder:
        name, _, text = spec.partition("=")
        cfg = {"model": "clay_transfer", **json.loads(text or "{}")}
        ckpt = cfg.get("encoder_from") and str(args.root / encoder_from_path(cfg["encoder_from"]))
        if ckpt:
            cfg["encoder_from"] = ckpt
        cfg = resolve_run_config(cfg)
        model = build_model(cfg, stats).eval()
        t0 = time.perf_counter()
        emb = embed_all(model, data)
        r2, read = linear_readout(emb, target)
        note = (f"embedding {emb['train'].shape[1]} wide in {time.perf_counter() - t0:.0f} s; R^2 of 9x9 means: "
                f"min {float(r2.min()):.4f}, median {float(r2.median()):.4f}"
                + "".join(f", {ALL_CHANNELS[b]} {float(r2[b]):.4f}" for b in needed))
        ln = {s: F.layer_norm(emb[s], emb[s].shape[1:]) for s in SPLITS}
        row(f"{name}: + embedding, whole", {s: {"base": base[s], "emb": ln[s]} for s in SPLITS}, note)
        row(f"{name}: + embedding, bottleneck 16", {s: {"base": base[s], "emb": ln[s]} for s in SPLITS},
            bottleneck=16)
        mean, cov, _ = embedding_moments([emb["train"]])
        center, basis, _ = principal_axes(mean, cov)
        rotated = {s: (emb[s] - center) @ basis for s in SPLITS}
        row(f"{name}: + embedding in its principal axes (head_decorrelate), bottleneck 16",
            {s: {"base": base[s], "emb": rotated[s]} for s in SPLITS}, bottleneck=16)
        row(f"{name}: + the 9x9 means read linearly out of the embedding",
            {s: {"base": torch.cat([base[s], read[s]], dim=1)} for s in SPLITS})
        layer0 = layer0_features(model, data)
        r2_0, _ = linear_readout(layer0, means5)
        row(f"{name}: + its patch embedding (layer 0), standardised, bottleneck 16",
            {s: {"base": base[s], "emb": layer0[s]} for s in SPLITS},
            f"{layer0['train'].shape[1]} features; R^2 of the 5x5 means from them: min {float(r2_0.min()):.5f}",
            bottleneck=16)
        if ckpt and model.patch_mode in PIXEL_WINDOW:
            fill, ring = infill_errors(model, cfg["preset"], ckpt, data, norm)
            print(f"|   {name}: MAE in-fill of the station pixel, RMS (normalised, median band) | | | "
                  f"{fill:.3f} against {ring:.3f} for the mean of its neighbours | |", flush=True)


if __name__ == "__main__":
    main()
