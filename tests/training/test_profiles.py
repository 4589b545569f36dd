"""The committed models were trained with what the profiles say today (each member of an
ensemble with the profile its manifest names, or the profile that now holds its `--set`
values), so the profiles reproduce them."""

from __future__ import annotations

import pytest

from seqserve.manifest import Manifest, newest_version_dir
from training.config import REPO_ROOT, load_config


# Settings added after a committed model was trained, with the value that trains as before:
# the model's manifest does not record them, and the profile must still hold that value.
ADDED_SINCE = {"translate": {"ema_decay": 0.0, "init_from": ""},
               "music": {"keep_epochs": False}}
ADDED_SINCE_MODEL = {"translate": {"encoder_layers": 1}}

# Runs stopped by hand: the profile now stops where the committed run was stopped (its
# manifest records the settings it ran with and how many epochs it ran, checked here).
STOPPED_BY_HAND = {("translate", "full_encoder2"): "max_epochs"}

# The profile of each member of the committed sentiment ensemble, in order (sentiment/6: each
# member's manifest names it too).
SENTIMENT_MEMBER_PROFILES = ["full_refit", "full_pretrained_fine_foods_refit", "full_pretrained_fine_foods_seed8_refit"]

# Runs made with `--profile full` and `--set` values that a named profile now holds.
RUN_AS = {("music", "full"): "full_dropout75_seed8"}  # music/6: dropout 0.75, seed 8, keep_epochs, no budget


def committed(task: str) -> Manifest:
    return Manifest.load(newest_version_dir(REPO_ROOT / "models" / task))


def test_the_sentiment_profiles_are_the_committed_members_settings():
    members = committed("sentiment").hyperparameters.get("members", [committed("sentiment").hyperparameters])
    assert len(members) == len(SENTIMENT_MEMBER_PROFILES)
    for member, profile in zip(members, SENTIMENT_MEMBER_PROFILES):
        config = load_config("sentiment", profile).model_dump()
        assert member["profile"] == profile
        assert member["train"] == config["train"] and member["tokenizer"] == config["tokenizer"]
        assert {k: member["model"][k] for k in ("embed_dim", "hidden_size", "attention_pooling")} == \
            {k: config["model"][k] for k in ("embed_dim", "hidden_size", "attention_pooling")}
        assert member.get("pretrain") == (config["pretrain"] if config["pretrain"]["epochs"] else None)


@pytest.mark.parametrize("task", ["music", "translate"])
def test_the_profiles_are_the_committed_models_settings(task):
    hyperparameters = committed(task).hyperparameters
    members = hyperparameters.get("members", [hyperparameters])  # an ensemble's, in order
    summaries = committed(task).training.get("members", [committed(task).training])
    for member, summary in zip(members, summaries, strict=True):
        profile = member.get("profile", "full")
        profile = RUN_AS.get((task, profile), profile)
        config = load_config(task, profile).model_dump()
        added = {key: value for key, value in ADDED_SINCE.get(task, {}).items() if key not in member["train"]}
        trained = {**member["train"], **added}
        if (task, profile) in STOPPED_BY_HAND:
            key = STOPPED_BY_HAND[task, profile]
            assert summary["epochs_run"] == config["train"][key] < trained[key]
            trained[key] = config["train"][key]
        assert trained == config["train"]
        assert member.get("tokenizer", config.get("tokenizer")) == config.get("tokenizer")
        model = {**ADDED_SINCE_MODEL.get(task, {}), **member["model"]}
        assert {k: model[k] for k in config["model"]} == config["model"]
