"""Bad-input battery, config (tests/bad_inputs.py): a wrong key, type, value or path names the key.
"""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from conftest import REPO

from ta2d.config import ConfigError, validate_config
from ta2d.config import deep_merge as deep_update

# --- config ----------------------------------------------------------------------------------------------

CONFIG_FAULTS = [
    ("typo_top_level", lambda c: c.__setitem__("pach", {"size": 9}), "unknown key pach (allowed here:"),
    ("typo_nested", lambda c: c["inputs"]["labels"].__setitem__("timezon", "UTC"),
     "unknown key inputs.labels.timezon (allowed here: encoding, format, path, timezone)"),
    ("typo_train_run", lambda c: c["train"]["runs"]["cnn"].__setitem__("epoch", 3), "unknown key train.runs.cnn.epoch"),
    ("wrong_type", lambda c: c["patch"].__setitem__("size", "9"), "key patch.size: '9' is not of type 'integer'"),
    ("wrong_type_list", lambda c: c["inputs"]["l1b"].__setitem__("slot_minutes", 0),
     "key inputs.l1b.slot_minutes: 0 is not of type 'array'"),
    ("wrong_enum", lambda c: c["inputs"]["labels"].__setitem__("timezone", "JST"),
     "key inputs.labels.timezone: 'JST' is not one of ['KST', 'UTC']"),
    ("missing_labels_file", lambda c: c["inputs"]["labels"].__setitem__("path", "/nonexistent/labels.csv"),
     "key inputs.labels.path: file /nonexistent/labels.csv does not exist"),
    ("labels_pattern_matches_nothing", lambda c: c["inputs"]["labels"].__setitem__("path", "/nonexistent/OBS_*.csv"),
     "key inputs.labels.path: the pattern /nonexistent/OBS_*.csv matches no file"),
    ("static_path_is_a_folder", lambda c: c["inputs"]["static"].__setitem__("path", "/tmp"),
     "key inputs.static.path: file /tmp is a folder, not a file"),
    ("missing_raw_folder", lambda c: c["inputs"]["l1b"].__setitem__("dir", "/nonexistent/raw"),
     "key inputs.l1b.dir: folder /nonexistent/raw does not exist"),
    ("impossible_date", lambda c: c["period"].__setitem__("end", "2024-02-30"), "key period: not a date"),
    ("background_pattern_matches_nothing",
     lambda c: c["inputs"].__setitem__("background", {"t2m": "/nonexistent/t2m_*.nc", "orography": "/tmp"}),
     "key inputs.background.t2m: /nonexistent/t2m_*.nc matches no file; key inputs.background.orography: file /tmp "
     "is a folder, not a file"),
    ("background_without_orography", lambda c: c["inputs"].__setitem__("background", {"t2m": "/nonexistent.nc"}),
     "'orography' is a required property"),
    ("old_map_times", lambda c: c["maps"].__setitem__("times", ["2024-04-03T05:00"]),
     "unknown key maps.times (maps.times, single slots, was replaced by maps.days"),
]


def test_a_labels_pattern_that_matches_files_is_valid(base):
    config = copy.deepcopy(base.config)
    labels = config["inputs"]["labels"]["path"]
    config["inputs"]["labels"]["path"] = labels[:-5] + "*" + labels[-4:]  # labels.csv -> label*.csv
    assert validate_config(config)["inputs"]["labels"]["path"].endswith("label*.csv")


@pytest.mark.parametrize("fault, message", [f[1:] for f in CONFIG_FAULTS], ids=[f[0] for f in CONFIG_FAULTS])
def test_config_fault_names_the_key(base, fault, message):
    config = copy.deepcopy(base.config)
    fault(config)
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(config)




SHIPPED_OVERLAYS = ["config/gk2a.yaml", "config/test/tiny.yaml", "config/map.yaml", "config/nrt.yaml",
                    *[f"config/experiments/{p.name}" for p in sorted((REPO / "config/experiments").glob("*.yaml"))]]


@pytest.mark.parametrize("overlay", SHIPPED_OVERLAYS)
def test_every_shipped_config_validates_as_users_run_it(overlay):
    """Each file a user passes with --configfile, merged over config/config.yaml as Snakemake merges it,
    passes the schema and the semantic checks (input paths are not checked: gk2a.yaml names /data)."""
    config = deep_update(yaml.safe_load((REPO / "config/config.yaml").read_text()),
                         yaml.safe_load((REPO / overlay).read_text()))
    checked = validate_config(config, source=overlay, check_files=False)
    for name, run in checked["train"]["runs"].items():
        if run.get("encoder_from"):  # a pretrain run of the same merged config
            assert run["encoder_from"] in checked["pretrain"]["runs"], (overlay, name)


def test_cli_merges_config_files_as_snakemake_does(capsys):
    """An overlay alone lacks the base keys; given after config/config.yaml it validates, as --configfile runs it."""
    from ta2d.cli import main

    overlay = str(REPO / "config/experiments/clay_pixels.yaml")
    assert main(["validate-config", overlay]) == 1
    assert "'domain' is a required property" in capsys.readouterr().err
    assert main(["validate-config", str(REPO / "config/config.yaml"), overlay]) == 0
    assert "config.yaml + " in capsys.readouterr().out


def test_a_config_file_that_is_not_a_mapping_is_named(tmp_path, capsys):
    from ta2d.cli import main

    listed = tmp_path / "listed.yaml"
    listed.write_text("- period\n- domain\n")
    assert main(["validate-config", str(REPO / "config/config.yaml"), str(listed)]) == 1
    assert f"config file {listed}: the top level is a list, not a mapping" in capsys.readouterr().err
    assert main(["validate-config", str(tmp_path / "absent.yaml")]) == 1
    assert "absent.yaml does not exist" in capsys.readouterr().err
