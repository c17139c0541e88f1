"""Run key head_decorrelate: the principal axes of a Clay embedding on the train split, for the head to see
it in (``ClayTransfer.set_head_basis``).

Fitted once before the first epoch, from the embedding cache (frozen encoder) or from the encoder at init
(fine-tuning: the axes then describe the starting point, which is what the head's first steps see). A resumed
run takes them from its checkpoint instead. The moments are summed in float64 over batches spread evenly over
the train files, so that a long archive is sampled across all of it rather than its first weeks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ta2d.chunks.loader import ChunkBatches

BASIS_SAMPLES = 65_536  # enough for the covariance of a 3072-wide embedding (Clay large, cls_mean_centre)


NULL_AXIS_RTOL = 1e-12  # eigenvalues below this share of the largest are round-off: no variance at all


def principal_axes(mean: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(centre, basis, variances): the basis's columns are the covariance's eigenvectors by falling eigenvalue
    (``variances``, float64), each signed so that its largest entry is positive (eigh leaves the sign to the
    solver).

    Axes without variance (eigenvalue below NULL_AXIS_RTOL of the largest) are zero columns. Within them the
    eigenvectors are any rotation the solver happens on, so a sample outside the train span would reach the
    head through arbitrary coordinates, differently on every machine. There are such axes whenever there are
    fewer train samples than features, and a few always: each LayerNormed token of a Clay embedding obeys
    one linear constraint (the demo's 576 features have 3 at 1e-16, the next at 2e-10)."""
    values, vectors = torch.linalg.eigh(cov.double())
    order = values.argsort(descending=True)
    values, vectors = values[order], vectors[:, order]
    peak = vectors.abs().argmax(dim=0)
    vectors = vectors * vectors[peak, torch.arange(vectors.shape[1])].sign()
    null = values <= NULL_AXIS_RTOL * values[0].clamp_min(torch.finfo(torch.float64).tiny)
    vectors[:, null] = 0.0
    values[null] = 0.0
    return mean.float(), vectors.float(), values


def embedding_moments(embeddings) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean and covariance (float64) of the rows of an iterable of (B, D) tensors, and the number of rows."""
    n, total, outer = 0, None, None
    for e in embeddings:
        e = e.detach().double().cpu()
        if total is None:
            total, outer = torch.zeros(e.shape[1], dtype=torch.float64), torch.zeros(e.shape[1], e.shape[1],
                                                                                     dtype=torch.float64)
        n += len(e)
        total += e.sum(dim=0)
        outer += e.T @ e
    if not n or n < 2:
        raise ValueError(f"head_decorrelate: {n} training samples, too few for the embedding's covariance")
    mean = total / n
    cov = (outer - n * torch.outer(mean, mean)) / (n - 1)
    return mean, cov, n


def fit_head_basis(model, files: Sequence[str | Path], fields: Sequence[str], batch_size: int,
                   device: torch.device, max_samples: int = BASIS_SAMPLES,
                   log: Callable[[str], None] = print) -> int:
    """Set ``model``'s head basis from the train ``files`` (chunks, or embedding files with field emb); returns the
    number of samples it saw."""
    batches = ChunkBatches(files, batch_size, fields)
    stride = max(1, math.ceil(batches.n_samples / max_samples))

    def embeddings():
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for i, batch in enumerate(batches):
                    if i % stride:
                        continue
                    if "emb" in batch:
                        yield batch["emb"]
                    else:
                        yield model.embed({k: v.to(device, non_blocking=True) for k, v in batch.items()})
        finally:
            model.train(was_training)

    mean, cov, n = embedding_moments(embeddings())
    center, basis, values = principal_axes(mean, cov)
    model.set_head_basis(center.to(model.emb_center.device), basis.to(model.emb_basis.device))
    share = float(values[:16].sum() / values.sum()) if float(values.sum()) > 0 else float("nan")
    null = int((values == 0).sum())
    log(f"head basis: the embedding's principal axes from {n} train samples (every {stride}. batch); "
        f"the first 16 of {len(values)} axes hold {share:.1%} of its variance; {null} axes without variance")
    return n
