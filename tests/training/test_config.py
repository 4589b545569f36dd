"""Configs are validated when loaded: the committed files and profiles load unchanged in
meaning, and an unknown key (in the file, a profile or a --set) or a value of the wrong
type is refused by name."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import REPO_ROOT
from training.config import CONFIG_DIR, load_config

PROFILES = {"sentiment": ["smoke", "full", "full_pretrained", "full_fine_foods", "full_pretrained_fine_foods",
                          "full_pretrained_fine_foods_seed8", "full_pretrained_long", "full_pretrained_long_fine_foods",
                          "full_refit", "full_pretrained_refit", "full_pretrained_fine_foods_refit",
                          "full_pretrained_fine_foods_seed8_refit"],
            "music": ["smoke", "full", "full_dropout75_seed8"],
            "translate": ["smoke", "full", "full_ema", "full_encoder2", "full_swa", "gpu_encoder2",
                          "gpu_encoder2_decoder1024"]}


def plain_merge(task: str, profile: str) -> dict:
    """What loading meant before configs were typed: the profile's sections over the defaults."""
    raw = tomllib.loads((CONFIG_DIR / f"{task}.toml").read_text())
    profiles = raw.pop("profiles")
    config = copy.deepcopy(raw)
    for section, values in profiles[profile].items():
        config.setdefault(section, {}).update(values)
    return config


@pytest.mark.parametrize("task,profile", [(t, p) for t, profiles in PROFILES.items() for p in profiles])
def test_every_committed_profile_loads_unchanged_in_meaning(task, profile):
    config = load_config(task, profile)
    assert (config.task, config.profile) == (task, profile)
    assert config.model_dump(exclude={"task", "profile"}) == plain_merge(task, profile)
    assert set(tomllib.loads((CONFIG_DIR / f"{task}.toml").read_text())["profiles"]) == set(PROFILES[task])


def config_dir_with(tmp_path, task: str, text: str):
    """A copy of the config folder whose `task` file has `text` appended."""
    folder = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, folder)
    with open(folder / f"{task}.toml", "a") as handle:
        handle.write("\n" + text + "\n")
    return folder


def refusal(*args, **kwargs) -> str:
    with pytest.raises(SystemExit) as refused:
        load_config(*args, **kwargs)
    return str(refused.value)


def test_an_unknown_key_in_the_file_is_refused_by_name(tmp_path):
    folder = config_dir_with(tmp_path, "music", "[embeddings]\ndim = 50")
    message = refusal("music", "smoke", config_dir=folder)
    assert "music.toml" in message and "embeddings: unknown key" in message
    assert "the top level has: data, model, train" in message


def test_an_unknown_key_in_any_profile_is_refused_by_name_whichever_profile_is_loaded(tmp_path):
    folder = config_dir_with(tmp_path, "translate", "[profiles.full.model]\nhidden = 64")
    for profile in ("smoke", "full"):
        message = refusal("translate", profile, config_dir=folder)
        assert "[profiles.full]" in message and "model.hidden: unknown key" in message
        assert "model has: embed_dim, encoder_hidden, encoder_layers, decoder_hidden, dropout" in message


def test_an_unknown_key_in_a_set_is_refused_by_name():
    message = refusal("sentiment", "smoke", ["train.learning_rat=0.01"])
    assert "--set 'train.learning_rat=0.01'" in message and "train.learning_rat: unknown key" in message
    assert "learning_rate" in message  # the section's keys are listed
    assert "trian: unknown key" in refusal("sentiment", "smoke", ["trian.seed=1"])
    assert "data.lab.versoin: unknown key" in refusal("music", "smoke", ["data.lab.versoin=1"])
    assert "expected SECTION.KEY=VALUE" in refusal("sentiment", "smoke", ["seed=1"])


@pytest.mark.parametrize("override,expected", [
    ("train.batch_size=abc", "train.batch_size: Input should be a valid integer (got 'abc')"),
    ("train.max_epochs=2.5", "train.max_epochs: Input should be a valid integer"),
    ("model.attention_pooling=1", "model.attention_pooling: Input should be a valid boolean"),
    ("train.batch_size=0", "train.batch_size: Input should be greater than or equal to 1"),
    ("pretrain.softmax_cutoffs=[200, 'x']", "pretrain.softmax_cutoffs.1: Input should be a valid integer"),
])
def test_types_are_checked(override, expected):
    assert expected in refusal("sentiment", "smoke", [override])


def test_known_keys_are_set_at_any_depth_with_their_types():
    config = load_config("sentiment", "smoke", ["train.learning_rate=1", "train.oversample={rotten_tomatoes = 2}",
                                                "train.oversample.imdb=3"])
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)
    assert config.train.oversample == {"rotten_tomatoes": 2, "imdb": 3}
    assert load_config("music", "smoke", ["data.lab.version=0.7.6"]).data.lab.version == "0.7.6"  # read as a string
    assert load_config("translate", "full", ["train.max_seconds=90.5"]).train.max_seconds == 90.5


def test_the_cli_refuses_an_unknown_key_before_any_work():
    result = subprocess.run([sys.executable, "-m", "training", "train", "translate", "--profile", "smoke",
                             "--set", "train.patienc=2"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "train.patienc: unknown key" in result.stderr and "patience" in result.stderr
