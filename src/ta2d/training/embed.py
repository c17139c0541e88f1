"""Embedding cache for a frozen Clay encoder: each chunk's encoder features are computed once.

An embedding file is a chunk-like dict (loadable with weights_only=True, mmap=True) holding what the
head needs: ``emb`` (N, E) float32 plus x_center (N, 19), y, time7, loc, landcover_onehot, elev, stn, time (and
background where the chunk has it),
and two strings: ``fingerprint`` (encoder weights + everything that changes its output: preset, waves,
patch mode, pooling, x normalisation stats, autocast dtype) and ``chunk_digest`` (the chunk file's
content hash). ``embed_chunk`` recomputes only when either differs from the existing file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path

import torch

from ta2d.chunks.contract import save_tensors, verify_fields
from ta2d.chunks.loader import open_chunk
from ta2d.models import ClayTransfer, build_model
from ta2d.models.ta_model import N_SPECTRAL, center_pixels
from ta2d.training.inference import autocast_dtype, load_stats, resolve_device
from ta2d.training.run_config import resolve_run_config

EMB_FIELDS = ("emb", "x_center", "y", "time7", "loc", "landcover_onehot", "elev")  # + ta2d.models.input_fields
# the chunk's side fields the head reads, copied as they are: the background only where the chunk has it
_COPY_FIELDS = ("y", "time7", "loc", "landcover_onehot", "elev", "background", "stn", "time")


def file_digest(path: str | Path, block: int = 1 << 22) -> str:
    """blake2b of a file's bytes."""
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def tensor_digest(h, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{tuple(t.shape)}{t.dtype}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def embedding_fingerprint(model: ClayTransfer, amp: str | None = None) -> str:
    """Hash of the encoder's weights and of every setting that changes its embeddings.

    The device is not part of it (CPU and GPU float32 agree to rounding); autocast (``amp``) is.
    """
    h = hashlib.blake2b(digest_size=20)
    meta = {"patch_mode": model.patch_mode, "pool": model.pool, "amp": amp, "format": 1}
    if model.drop_features:  # time and lat/lon feed the encoder too
        meta["drop_features"] = list(model.drop_features)
    h.update(json.dumps(meta, sort_keys=True).encode())
    for t in (model.waves, model.normalizer.x_mean[:N_SPECTRAL], model.normalizer.x_std[:N_SPECTRAL]):
        tensor_digest(h, t)
    for k, v in sorted(model.encoder.state_dict().items()):
        h.update(k.encode())
        tensor_digest(h, v)
    return h.hexdigest()


def read_tags(path: str | Path) -> tuple[str | None, str | None]:
    try:
        d = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return d.get("fingerprint"), d.get("chunk_digest")
    except Exception:  # noqa: BLE001 - an unreadable file is recomputed
        return None, None


@torch.no_grad()
def embed_chunk(
    chunk_path: str | Path,
    out_path: str | Path,
    model: ClayTransfer | None = None,
    *,
    run_cfg: Mapping | None = None,
    stats: Mapping | str | Path | None = None,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    amp_dtype: str | None = None,
    fingerprint: str | None = None,
) -> bool:
    """Write the embedding file of one chunk; return False when the existing file is still valid.

    Pass a built ``model`` (its encoder is used, in eval mode), or ``run_cfg`` + ``stats`` (a dict or
    stats.json path) to build it as train_run does (same seed, so the same weights); then device and
    AMP default to the run config's, as in train_run. ``amp_dtype`` ("bfloat16"/"float16") autocasts
    on CUDA only and is part of the fingerprint.
    """
    if model is None:
        cfg = resolve_run_config(run_cfg or {})
        model = build_model(cfg, load_stats(stats, []))
        device = resolve_device(cfg["device"] if device is None else device)
        if amp_dtype is None and cfg["amp"]:
            amp_dtype = cfg["amp_dtype"]
    device = torch.device("cpu" if device is None else device)
    model = model.to(device).eval()
    amp = autocast_dtype(amp_dtype, device)  # bfloat16 only where the GPU has it natively
    fp = fingerprint or embedding_fingerprint(model, amp)
    digest = file_digest(chunk_path)
    if Path(out_path).exists() and read_tags(out_path) == (fp, digest):
        return False
    chunk = open_chunk(chunk_path)
    verify_fields(chunk_path, {k: chunk[k] for k in ("x", "time7", "loc")})  # read whole below anyway
    n = len(chunk["y"])
    ctx = torch.autocast("cuda", dtype=getattr(torch, amp)) if amp else nullcontext()
    embs = []
    for lo in range(0, n, batch_size):
        batch = {k: chunk[k][lo : lo + batch_size].to(device) for k in ("x", "time7", "loc")}
        with ctx:
            embs.append(model.embed(batch).float().cpu())
    out = {
        "emb": torch.cat(embs) if embs else torch.zeros(0, model.embed_dim),
        "x_center": center_pixels(chunk).clone(),
    }
    out.update({k: chunk[k].clone() for k in _COPY_FIELDS if k in chunk})
    out.update(fingerprint=fp, chunk_digest=digest)
    save_tensors(out, out_path)
    return True


def embed_chunks(
    chunk_paths: Sequence[str | Path],
    out_dir: str | Path,
    model: ClayTransfer,
    *,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    amp_dtype: str | None = None,
    progress: bool = False,
) -> tuple[list[Path], int]:
    """embed_chunk for many chunks into out_dir/<chunk file name>; returns (paths, number recomputed)."""
    device = torch.device(device)
    model = model.to(device).eval()
    amp = autocast_dtype(amp_dtype, device)  # bfloat16 only where the GPU has it natively
    fp = embedding_fingerprint(model, amp)
    outs, n_new = [], 0
    it = chunk_paths
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(chunk_paths, desc="embed", leave=False)
    for p in it:
        out = Path(out_dir) / Path(p).name
        n_new += embed_chunk(
            p, out, model, batch_size=batch_size, device=device, amp_dtype=amp_dtype, fingerprint=fp
        )
        outs.append(out)
    return outs, n_new
