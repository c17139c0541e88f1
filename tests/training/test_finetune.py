"""Fine-tuning the Clay encoder (run keys finetune, finetune_blocks, encoder_lr, layer_decay): what trains,
the optimizer's layer-wise rates, current.pt of last_k / full and their resume, config errors naming the key."""

from __future__ import annotations

import copy
import csv
import re

import pytest
import torch
from fakes import Killed, kill_after, rerun_killed, training_data

from ta2d.config import ConfigError, validate_config
from ta2d.models import PRESETS, build_model, load_model
from ta2d.training import make_scheduler, param_groups, predict_chunks, resolve_run_config, train_run

FAST = {"preset": "tiny", "batch_size": 64, "lr": 3e-3, "head_hidden": 64, "seed": 7}
DEPTH = PRESETS["tiny"]["depth"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return training_data(tmp_path_factory, 2, 1)


def assert_same_weights(a, b):
    """current.pt and best.pt of run folders a and b hold the same weights."""
    for name in ("current.pt", "best.pt"):
        wa = torch.load(a / name, weights_only=True)["model"]
        wb = torch.load(b / name, weights_only=True)["model"]
        assert wa.keys() == wb.keys() and all(torch.equal(wa[key], wb[key]) for key in wa), name


def quiet(s):
    pass


def read_metrics(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def initial_encoder(cfg, stats) -> dict[str, torch.Tensor]:
    """The encoder weights a run starts from (build_model seeds with the run's seed), as train_run builds them."""
    from ta2d.training.inference import load_stats

    model = build_model(resolve_run_config(cfg), load_stats(stats))
    return {f"encoder.{k}": v.clone() for k, v in model.encoder.state_dict().items()}


def block_of(key: str) -> int | None:
    m = re.match(r"encoder\.transformer\.layers\.(\d+)\.", key)
    return int(m.group(1)) if m else None


def expected_scale(name: str, decay: float) -> float:
    """Layer-wise decay written out from the definition (BEiT/MAE): block i of depth L -> decay^(L - i),
    cls token and patch embedding -> decay^(L + 1), the final norm -> 1."""
    if name.startswith("transformer.layers."):
        return decay ** (DEPTH - int(name.split(".")[2]))
    if name == "cls_token" or name.startswith("patch_embedding."):
        return decay ** (DEPTH + 1)
    assert name.startswith("transformer.norm."), name
    return 1.0


# --- what trains ----------------------------------------------------------------------------------------------


def test_last_k_trains_only_the_last_blocks_and_resumes(data, tmp_path):
    """last_k (k=2): earlier blocks, cls token and patch embedding bit-identical after training, every tensor of
    the last 2 blocks and the final norm changed; current.pt keeps only the trainable encoder tensors (plus the
    frozen part's fingerprint), best.pt is whole; kill + resume equals an uninterrupted run."""
    train, val, stats = data
    k = 2
    cfg = {**FAST, "epochs": 3, "patience": 0, "finetune": "last_k", "finetune_blocks": k, "encoder_lr": 1e-3}
    init = initial_encoder(cfg, stats)
    a, b = tmp_path / "a", tmp_path / "b"
    train_run(cfg, train, val, stats, a, progress=False, log=quiet)

    best = torch.load(a / "best.pt", weights_only=True)
    assert best["epoch"] > 1  # the weights below are the result of training
    trained = {key: v for key, v in best["model"].items() if key.startswith("encoder.")}
    assert trained.keys() == init.keys()
    last = range(DEPTH - k, DEPTH)
    for key, v in init.items():
        if block_of(key) in last or key.startswith("encoder.transformer.norm."):
            assert not torch.equal(trained[key], v), f"{key} did not train"
        else:
            assert torch.equal(trained[key], v), f"{key} is frozen but changed"

    cur = torch.load(a / "current.pt", weights_only=True)
    enc_keys = {key for key in cur["model"] if key.startswith("encoder.")}
    assert enc_keys == {key for key in init if block_of(key) in last or key.startswith("encoder.transformer.norm.")}
    assert cur["encoder_fingerprint"] == best["encoder_fingerprint"]
    with pytest.raises(ValueError, match="only the trainable encoder weights.*best.pt"):
        load_model(a / "current.pt")

    with pytest.raises(Killed):
        train_run(cfg, train, val, stats, b, progress=False, log=quiet, on_epoch_end=kill_after(1))
    res, logs = rerun_killed(cfg, train, val, stats, b)
    assert res["resumed_from"] == 1 and any("resuming" in s and "epoch 2" in s for s in logs)
    assert read_metrics(a / "metrics.csv") == read_metrics(b / "metrics.csv")
    assert_same_weights(a, b)

    # frozen blocks that are not the ones the run trained with (fingerprint): start over, saying why
    ck = torch.load(b / "current.pt", weights_only=True)
    ck["encoder_fingerprint"] = "0" * 40
    torch.save(ck, b / "current.pt")
    logs.clear()
    res = train_run(cfg, train, val, stats, b, progress=False, log=logs.append)
    assert res["resumed_from"] is None and any("frozen encoder" in s and "from scratch" in s for s in logs)


def test_config_knows_the_presets_depths_without_torch():
    from ta2d.config import CLAY_DEPTHS

    assert CLAY_DEPTHS == {name: p["depth"] for name, p in PRESETS.items()}


def test_frozen_blocks_get_no_gradient_and_full_gets_all():
    stats = {"x_mean": [0.0] * 19, "x_std": [1.0] * 19, "y_mean": 0.0, "y_std": 1.0}
    for k in (1, DEPTH):
        model = build_model(resolve_run_config({"finetune": "last_k", "finetune_blocks": k}), stats)
        trainable = {n for n, p in model.encoder.named_parameters() if p.requires_grad}
        want = {n for n, _ in model.encoder.named_parameters()
                if n.startswith("transformer.norm.")
                or (n.startswith("transformer.layers.") and int(n.split(".")[2]) >= DEPTH - k)}
        assert trainable == want
        assert not model.freeze_encoder
    full = build_model(resolve_run_config({"finetune": "full"}), stats)
    assert all(p.requires_grad for p in full.encoder.parameters())
    frozen = build_model(resolve_run_config({}), stats)
    assert frozen.freeze_encoder and not any(p.requires_grad for p in frozen.encoder.parameters())


# --- the optimizer's groups -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, k", [("full", None), ("last_k", 3)])
def test_param_groups_carry_the_layerwise_rates(mode, k):
    stats = {"x_mean": [0.0] * 19, "x_std": [1.0] * 19, "y_mean": 0.0, "y_std": 1.0}
    cfg = resolve_run_config({"finetune": mode, "finetune_blocks": k or 1, "encoder_lr": 4e-4, "layer_decay": 0.6,
                              "lr": 2e-3, "weight_decay": 0.05})
    model = build_model(cfg, stats)
    groups = param_groups(model, cfg)
    where = {id(p): g for g in groups for p in g["params"]}
    assert len(where) == sum(len(g["params"]) for g in groups)  # every parameter in at most one group
    for name, p in model.named_parameters():
        if not name.startswith("encoder."):
            g = where[id(p)]
            assert (g["lr"], g["weight_decay"]) == (2e-3, 0.05), name  # head: as before, all decayed
            continue
        inner = name[len("encoder."):]
        if not p.requires_grad:
            assert id(p) not in where, name
            continue
        g = where[id(p)]
        assert g["lr"] == pytest.approx(4e-4 * expected_scale(inner, 0.6), rel=1e-12), name
        no_decay = p.ndim == 1 or inner in ("cls_token", "patch_embedding.weight_generator.weight_tokens",
                                            "patch_embedding.weight_generator.bias_token")
        assert g["weight_decay"] == (0.0 if no_decay else 0.05), name
    n_enc = sum(p.requires_grad for n, p in model.named_parameters() if n.startswith("encoder."))
    assert sum(len(g["params"]) for g in groups if g["name"] != "head") == n_enc
    if mode == "last_k":
        assert n_enc < sum(1 for n, _ in model.named_parameters() if n.startswith("encoder."))
    # frozen: the head only
    frozen = resolve_run_config({})
    assert [g["name"] for g in param_groups(build_model(frozen, stats), frozen)] == ["head"]


@pytest.mark.parametrize("kind", ["warmup_cosine", "onecycle", "cosine"])
def test_schedules_scale_every_group_proportionally(kind):
    """Each group follows the schedule from its own peak rate: the ratios between groups never change."""
    stats = {"x_mean": [0.0] * 19, "x_std": [1.0] * 19, "y_mean": 0.0, "y_std": 1.0}
    cfg = resolve_run_config({"finetune": "full", "encoder_lr": 1e-4, "layer_decay": 0.5, "epochs": 3,
                              "scheduler": kind})
    model = build_model(cfg, stats)
    opt = torch.optim.AdamW(param_groups(model, cfg), weight_decay=cfg["weight_decay"])
    peaks = [g["lr"] for g in opt.param_groups]
    sched = make_scheduler(opt, cfg, steps_per_epoch=5)
    seen = []
    for _ in range(15):
        lrs = [g["lr"] for g in opt.param_groups]
        ratio = lrs[0] / peaks[0]
        assert [lr / peak for lr, peak in zip(lrs, peaks, strict=True)] == pytest.approx([ratio] * len(lrs), rel=1e-9)
        seen.append(ratio)
        opt.step()
        sched.step()
    assert max(seen) > 5 * min(seen)  # the schedule did move


def test_unfrozen_encoder_without_decay_has_one_rate(data, tmp_path):
    """finetune full, layer_decay 1: the whole encoder at encoder_lr (what freeze_encoder: false used to do)."""
    train, val, stats = data
    cfg = {**FAST, "epochs": 1, "finetune": "full", "layer_decay": 1.0, "encoder_lr": 1e-5, "scheduler": "none"}
    train_run(cfg, train[:1], val[:1], stats, tmp_path, progress=False, log=quiet)
    ck = torch.load(tmp_path / "current.pt", weights_only=True)
    lrs = [g["lr"] for g in ck["optimizer"]["param_groups"]]
    assert lrs[0] == 3e-3 and set(lrs[1:]) == {1e-5}
    assert not (tmp_path / "embed").exists()


# --- full fine-tuning resumes --------------------------------------------------------------------------------


def test_full_finetune_resume_equals_uninterrupted_run(data, tmp_path):
    train, val, stats = data
    cfg = {**FAST, "epochs": 3, "patience": 0, "finetune": "full", "encoder_lr": 5e-4, "layer_decay": 0.75}
    a, b = tmp_path / "a", tmp_path / "b"
    train_run(cfg, train, val, stats, a, progress=False, log=quiet)

    with pytest.raises(Killed):
        train_run(cfg, train, val, stats, b, progress=False, log=quiet, on_epoch_end=kill_after(2))
    cur = torch.load(b / "current.pt", weights_only=True)
    assert "encoder_fingerprint" not in cur  # nothing is frozen: the whole model is in current.pt
    assert cur["model"].keys() == torch.load(b / "best.pt", weights_only=True)["model"].keys()
    res, logs = rerun_killed(cfg, train, val, stats, b)
    assert res["resumed_from"] == 2 and any("resuming" in s and "epoch 3" in s for s in logs)
    assert read_metrics(a / "metrics.csv") == read_metrics(b / "metrics.csv")
    assert_same_weights(a, b)
    init = initial_encoder(cfg, stats)
    wa = torch.load(a / "best.pt", weights_only=True)["model"]
    assert [key for key, v in init.items() if torch.equal(wa[key], v)] == []  # every encoder tensor trained
    pa, pb = (predict_chunks(load_model(d / "best.pt"), val, device="cpu") for d in (a, b))
    assert torch.equal(pa["y_pred"], pb["y_pred"])


# --- configuration errors name the key ------------------------------------------------------------------------


def minimal_config(**run) -> dict:
    return {"period": {"start": "2024-01-01", "end": "2024-01-02"},
            "domain": {"first_line": 1, "last_line": 9, "first_column": 1, "last_column": 9},
            "inputs": {key: {"path": "x"} for key in ("labels", "stations", "static")},
            "train": {"runs": {"ft": {"model": "clay_transfer", "preset": "tiny", **run}}}}


@pytest.mark.parametrize("run, message", [
    ({"finetune": "last_k", "finetune_blocks": 7},
     "key train.runs.ft.finetune_blocks: 7 with finetune: last_k, but preset tiny has 6 transformer blocks"),
    ({"finetune": "last_k", "finetune_blocks": 13, "preset": "base"},
     "key train.runs.ft.finetune_blocks: 13 with finetune: last_k, but preset base has 12"),
    ({"finetune": "last_k", "finetune_blocks": 0},
     "key train.runs.ft.finetune_blocks: 0 is less than the minimum of 1"),
    ({"layer_decay": 0}, "key train.runs.ft.layer_decay: 0 is less than or equal to the minimum of 0"),
    ({"layer_decay": 1.5}, "key train.runs.ft.layer_decay: 1.5 is greater than the maximum of 1"),
    ({"finetune": "partial"}, "key train.runs.ft.finetune: 'partial' is not one of ['frozen', 'last_k', 'full']"),
    ({"freeze_encoder": False},
     "unknown key train.runs.ft.freeze_encoder (replaced by finetune: frozen | last_k | full"),
])
def test_bad_finetune_config_names_the_key(run, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(minimal_config(**run), check_files=False)


def test_good_finetune_config_passes_and_fills_defaults():
    config = validate_config(minimal_config(finetune="last_k", finetune_blocks=6), check_files=False)
    run = config["train"]["runs"]["ft"]
    assert (run["finetune"], run["finetune_blocks"], run["layer_decay"]) == ("last_k", 6, 1.0)
    run = validate_config(minimal_config(), check_files=False)["train"]["runs"]["ft"]
    assert run["finetune"] == "frozen"


@pytest.mark.parametrize("cfg, message", [
    ({"finetune": "last_k", "finetune_blocks": 7}, "run config finetune_blocks: 7 with finetune: last_k"),
    ({"layer_decay": 0.0}, "run config: key layer_decay: 0.0 is less than or equal to the minimum of 0"),
    ({"layer_decay": 1.01}, "run config: key layer_decay: 1.01 is greater than the maximum of 1"),
    ({"finetune": "partial"}, "run config: key finetune: 'partial' is not one of ['frozen', 'last_k', 'full']"),
    ({"freeze_encoder": True, "finetune": "full"}, "run config freeze_encoder=True conflicts with finetune='full'"),
    ({"freeze_encoder": "yes"}, "run config freeze_encoder='yes': a boolean"),
])
def test_resolve_run_config_refuses_bad_finetune_keys(cfg, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve_run_config(cfg)


def test_legacy_freeze_encoder_is_an_alias_for_python_callers():
    assert resolve_run_config({"freeze_encoder": True})["finetune"] == "frozen"
    assert resolve_run_config({"freeze_encoder": False})["finetune"] == "full"
    assert resolve_run_config({"freeze_encoder": False, "finetune": "full"}) == resolve_run_config({"finetune": "full"})
    assert "freeze_encoder" not in resolve_run_config({"freeze_encoder": True})


def test_a_checkpoint_from_before_finetune_still_loads(data, tmp_path):
    """best.pt files written while the key was freeze_encoder keep loading (evaluate, maps)."""
    train, val, stats = data
    train_run({**FAST, "epochs": 1}, train[:1], val[:1], stats, tmp_path, progress=False, log=quiet)
    ck = torch.load(tmp_path / "best.pt", weights_only=True)
    old = copy.deepcopy(ck)
    for key in ("finetune", "finetune_blocks", "layer_decay"):
        del old["run_config"][key]
    old["run_config"]["freeze_encoder"] = True
    torch.save(old, tmp_path / "old.pt")
    pa, pb = (predict_chunks(load_model(tmp_path / n), val[:1], device="cpu") for n in ("best.pt", "old.pt"))
    assert torch.equal(pa["y_pred"], pb["y_pred"])
