"""Bad-input battery, chunk and training stage (tests/bad_inputs.py): broken chunk files given to training
name the file; a kill -9 during a chunk build or a training run leaves nothing that looks complete, and the
rerun gives what an undisturbed run gives; every torch.load of ta2d is weights_only.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from bad_inputs import (
    TRAIN_CFG,
)
from conftest import REPO
from fakes import flip_byte_in_tensor

from ta2d.chunks.contract import CHECKSUM_KEY
from ta2d.chunks.loader import ChunkError, open_chunk
from ta2d.chunks.patches import build_patch_chunk
from ta2d.grid import Domain
from ta2d.static import read_static
from ta2d.training import train_run

# --- chunks given to training ---------------------------------------------------------------------------

def _save(obj):
    return lambda path, good: torch.save(obj(torch.load(good, weights_only=True)), path)


CHUNK_FAULTS = [
    ("truncated", lambda p, good: p.write_bytes(good.read_bytes()[: good.stat().st_size // 2]),
     ChunkError, "not a readable chunk file (truncated or corrupt? rebuild it)"),
    ("last_bytes_missing", lambda p, good: p.write_bytes(good.read_bytes()[:-100]),
     ChunkError, "not a readable chunk file (truncated or corrupt? rebuild it)"),
    ("not_a_torch_file", lambda p, good: p.write_bytes(b"<html>404</html>"),
     ChunkError, "not a readable chunk file (truncated or corrupt? rebuild it)"),
    ("empty_file", lambda p, good: p.write_bytes(b""), ChunkError, "not a readable chunk file"),
    ("not_a_dict", _save(lambda d: d["x"]), ChunkError, "holds a Tensor, not a dict of tensors"),
    ("field_missing", _save(lambda d: {k: v for k, v in d.items() if k != "x"}), KeyError, "missing fields ['x']"),
    ("fields_disagree", _save(lambda d: {**d, "y": d["y"][:10]}), ChunkError,
     "fields disagree on the number of samples"),
    ("flipped_byte", lambda p, good: (p.write_bytes(good.read_bytes()), flip_byte_in_tensor(p, "x")), ChunkError,
     "field x: CRC-32"),
]


@pytest.mark.parametrize("plant, error, message", [f[1:] for f in CHUNK_FAULTS], ids=[f[0] for f in CHUNK_FAULTS])
def test_bad_chunk_given_to_training_names_the_file(train_inputs, tmp_path, plant, error, message):
    train, val, stats = train_inputs
    bad = tmp_path / "patch_pt" / train.name
    bad.parent.mkdir()
    plant(bad, train)
    with pytest.raises(error) as info:
        train_run({**TRAIN_CFG, "epochs": 1}, [bad], [val], stats, tmp_path / "run", progress=False,
                  log=lambda s: None)
    assert str(bad) in str(info.value) and message in str(info.value)


# --- kill -9 ---------------------------------------------------------------------------------------------

def _child(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"child exited ({proc.returncode}) before {path.name}:\n{proc.stdout.read()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"no {path.name} after {timeout} s")
        time.sleep(0.05)


def _kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


CHUNK_CHILD = """
    import io, json, sys, time
    from pathlib import Path
    import torch
    part, stations, scene, static_path, domain, out, marker = sys.argv[1:]
    real_save = torch.save

    def save_half_then_hang(obj, f, *args, **kwargs):  # the kill lands in the middle of the write
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        with open(f, "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            Path(marker).write_text(str(f))
            time.sleep(300)
            fh.write(data[len(data) // 2:])

    torch.save = save_half_then_hang
    from ta2d.grid import Domain
    from ta2d.chunks.patches import build_patch_chunk
    from ta2d.static import read_static
    static = read_static(static_path, Domain.from_config(json.loads(domain)))
    build_patch_chunk(part, stations, scene, static, 9, out, out.replace(".pt", ".rejects.csv"),
                      out.replace(".pt", ".index.csv"))
"""


def test_kill_during_chunk_build_leaves_no_complete_looking_chunk(base, tmp_path):
    name = "train_chunk_20240401"
    out = tmp_path / "patch_pt" / f"{name}.pt"
    marker = tmp_path / "writing"
    label_part, scene = base.out / f"labels/{name}.csv", base.out / "scenes/20240401.nc"
    stations = base.config["inputs"]["stations"]["path"]
    static_path, domain = base.config["inputs"]["static"]["path"], json.dumps(base.config["domain"])
    proc = _child(CHUNK_CHILD, str(label_part), stations, str(scene), static_path, domain, str(out), str(marker))
    _wait_for(marker, proc)
    _kill9(proc)
    part = Path(marker.read_text())
    assert not out.exists() and not out.with_suffix(".rejects.csv").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == [part.name]  # only the hidden temp file
    assert part.name.startswith(f".{name}.pt.") and part.name.endswith(".part") and part.stat().st_size > 0
    with pytest.raises(ChunkError, match="not a readable chunk file"):
        open_chunk(part)
    # the rerun (Snakemake: rerun-incomplete) rebuilds it, identical to an undisturbed build
    st = base.config["inputs"]["static"]
    static = read_static(st["path"], Domain.from_config(base.config["domain"]))
    build_patch_chunk(label_part, stations, scene, static, 9, out, out.with_suffix(".rejects.csv"),
                      out.with_suffix(".index.csv"))
    got, want = torch.load(out, weights_only=True), torch.load(base.out / f"patch_pt/{name}.pt", weights_only=True)
    assert sorted(got) == sorted(want) and got[CHECKSUM_KEY] == want[CHECKSUM_KEY]
    assert all(torch.equal(got[k], want[k]) for k in want if k != CHECKSUM_KEY)


TRAIN_CHILD = """
    import json, sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from ta2d.training import train_run
    cfg, train, val, stats, out, kill_after, marker = sys.argv[1:]

    def hang(epoch, row):  # stands for "still training epoch 3" when the kill comes
        if epoch == int(kill_after):
            Path(marker).write_text(str(epoch))
            time.sleep(300)

    res = train_run(json.loads(cfg), [train], [val], stats, out, progress=False, log=print, on_epoch_end=hang)
    print("RESULT", json.dumps(res))
"""


def _metrics(path: Path) -> list[dict]:
    return pd.read_csv(path).drop(columns="seconds").to_dict("records")


def test_kill_during_training_resumes_to_the_same_metrics(train_inputs, tmp_path):
    train, val, stats = train_inputs
    args = [json.dumps(TRAIN_CFG), str(train), str(val), str(stats)]
    marker = tmp_path / "epoch_done"
    whole = _child(TRAIN_CHILD, *args, str(tmp_path / "whole"), "0", str(tmp_path / "unused"))
    killed = _child(TRAIN_CHILD, *args, str(tmp_path / "killed"), "2", str(marker))
    _wait_for(marker, killed)
    _kill9(killed)
    run = tmp_path / "killed"
    assert torch.load(run / "current.pt", weights_only=True)["epoch"] == 2
    assert len(_metrics(run / "metrics.csv")) == 2
    # Snakemake deletes the declared outputs of an incomplete job before rerunning it
    (run / "best.pt").unlink()
    (run / "metrics.csv").unlink()
    resumed = _child(TRAIN_CHILD, *args, str(run), "0", str(tmp_path / "unused"))
    outputs = [proc.communicate(timeout=300)[0] for proc in (whole, resumed)]
    assert whole.returncode == 0 and resumed.returncode == 0, outputs
    assert '"resumed_from": 2' in outputs[1] and "resuming" in outputs[1] and "at epoch 3" in outputs[1]
    assert _metrics(run / "metrics.csv") == _metrics(tmp_path / "whole/metrics.csv")
    assert len(_metrics(run / "metrics.csv")) == 3
    for name in ("best.pt", "current.pt"):
        a = torch.load(tmp_path / "whole" / name, weights_only=True)["model"]
        b = torch.load(run / name, weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)


# --- torch.load -------------------------------------------------------------------------------------------

def test_every_torch_load_is_weights_only():
    """Chunks and checkpoints are data: no torch.load in src/ may unpickle arbitrary objects."""
    offenders, n = [], 0
    for path in sorted((REPO / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            is_load = isinstance(f, ast.Attribute) and f.attr == "load" and isinstance(f.value, ast.Name) \
                and f.value.id == "torch"
            if not is_load:
                continue
            n += 1
            ok = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                     for k in node.keywords)
            if not ok:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert n >= 5 and not offenders, offenders
    text = "\n".join(p.read_text() for p in (REPO / "src").rglob("*.py"))
    assert not re.search(r"from torch import[^\n]*\bload\b", text)


