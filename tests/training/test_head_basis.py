"""ta2d.training.head_basis (run key head_decorrelate): the principal axes of the train split's embeddings,
checked against numpy's SVD of the same rows, and what a training run stores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ta2d.chunks.contract import open_chunk
from ta2d.models import load_model
from ta2d.training import train_run
from ta2d.training.head_basis import embedding_moments, principal_axes


def correlated_rows(n=4000, d=12, seed=0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) * np.linspace(3.0, 0.01, d)[:, None]  # falling scales, then mixed
    return rng.normal(size=(n, d)) @ mixing + rng.normal(size=d) * 5


def test_moments_over_batches_are_those_of_all_rows():
    rows = correlated_rows()
    mean, cov, n = embedding_moments(torch.from_numpy(part) for part in np.array_split(rows, 7))
    assert n == len(rows)
    np.testing.assert_allclose(mean.numpy(), rows.mean(axis=0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(cov.numpy(), np.cov(rows, rowvar=False), rtol=1e-8, atol=1e-8)
    with pytest.raises(ValueError, match="too few"):
        embedding_moments([torch.zeros(1, 4)])


def test_principal_axes_match_the_svd_of_the_centred_rows():
    rows = correlated_rows()
    mean, cov, _ = embedding_moments([torch.from_numpy(rows)])
    center, basis, variances = principal_axes(mean, cov)
    _, sing, vt = np.linalg.svd(rows - rows.mean(axis=0), full_matrices=False)
    b = basis.double().numpy()
    np.testing.assert_allclose(b.T @ b, np.eye(len(b)), atol=1e-5)  # a rotation
    # the same axes as the SVD's (up to sign), in the same order: variance along each = sing^2 / (n - 1)
    np.testing.assert_allclose(np.abs(np.sum(b * vt.T, axis=0)), 1.0, atol=1e-4)
    variance = ((rows - center.double().numpy()) @ b).var(axis=0, ddof=1)
    np.testing.assert_allclose(variance, sing**2 / (len(rows) - 1), rtol=1e-4)
    assert np.all(np.diff(variance) <= 0)
    np.testing.assert_allclose(variances.numpy(), sing**2 / (len(rows) - 1), rtol=1e-6)
    assert np.all(b[np.abs(b).argmax(axis=0), np.arange(b.shape[1])] > 0)  # the sign convention


def test_a_frozen_run_stores_the_axes_of_its_cached_train_embeddings(training_chunks, tmp_path):
    train, val, stats = training_chunks
    cfg = {"preset": "tiny", "batch_size": 64, "head_hidden": 32, "epochs": 2, "seed": 3, "head_decorrelate": True}
    train_run(cfg, train, val, stats, tmp_path / "run", progress=False, log=lambda s: None)
    model = load_model(tmp_path / "run/best.pt")
    # independently: every train embedding file of the cache, numpy's covariance and eigenvectors
    emb = np.concatenate([open_chunk(tmp_path / "run/embed" / p.name, ["emb"])["emb"].double().numpy()
                          for p in train])
    values, vectors = np.linalg.eigh(np.cov(emb, rowvar=False))
    top = vectors[:, np.argsort(values)[::-1][:8]]
    np.testing.assert_allclose(model.emb_center.double().numpy(), emb.mean(axis=0), rtol=1e-5, atol=1e-6)
    stored = model.emb_basis.double().numpy()[:, :8]
    np.testing.assert_allclose(np.abs(np.sum(stored * top, axis=0)), 1.0, atol=1e-3)  # the leading axes, in order
    # the head's view of the train embeddings is decorrelated
    view = model.head_view(torch.from_numpy(emb).float()).double().numpy()
    corr = np.corrcoef(view[:, :8], rowvar=False)
    np.testing.assert_allclose(corr, np.eye(8), atol=1e-3)


def test_axes_without_variance_are_zero_columns():
    """Fewer rows than features: the axes outside the rows' span have no variance, and are left out (zero)."""
    rows = correlated_rows(n=6, d=12)
    mean, cov, _ = embedding_moments([torch.from_numpy(rows)])
    _, basis, _ = principal_axes(mean, cov)
    kept = basis.abs().sum(dim=0) > 0
    assert kept.tolist() == [True] * 5 + [False] * 7  # 6 centred rows span 5 dimensions
    b = basis[:, kept].double().numpy()
    np.testing.assert_allclose(b.T @ b, np.eye(5), atol=1e-5)
    # the rows are all in the kept axes: the rotation keeps their distances
    centred = rows - rows.mean(axis=0)
    np.testing.assert_allclose(np.linalg.norm(centred @ b, axis=1), np.linalg.norm(centred, axis=1), rtol=1e-5)
