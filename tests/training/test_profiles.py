"""The committed models were trained with what the profiles say today (sentiment's two
members: `full` and `full_pretrained`; music and translation: `full`), so the profiles
reproduce them."""

from __future__ import annotations

import pytest

from seqserve.manifest import Manifest, newest_version_dir
from training.config import REPO_ROOT, load_config


# Settings added after a committed model was trained, with the value that trains as before:
# the model's manifest does not record them, and the profile must still hold that value.
ADDED_SINCE = {"translate": {"ema_decay": 0.0}, "sentiment": {"domains": []}}


def committed(task: str) -> Manifest:
    return Manifest.load(newest_version_dir(REPO_ROOT / "models" / task))


def test_the_sentiment_profiles_are_the_committed_members_settings():
    members = committed("sentiment").hyperparameters.get("members", [committed("sentiment").hyperparameters])
    for member, profile in zip(members, ["full", "full_pretrained"]):
        config = load_config("sentiment", profile).model_dump()
        added = {key: value for key, value in ADDED_SINCE["sentiment"].items() if key not in member["train"]}
        assert {**member["train"], **added} == config["train"] and member["tokenizer"] == config["tokenizer"]
        assert {k: member["model"][k] for k in ("embed_dim", "hidden_size", "attention_pooling")} == \
            {k: config["model"][k] for k in ("embed_dim", "hidden_size", "attention_pooling")}
        assert member.get("pretrain") == (config["pretrain"] if config["pretrain"]["epochs"] else None)


@pytest.mark.parametrize("task", ["music", "translate"])
def test_the_full_profile_is_the_committed_models_settings(task):
    hyperparameters = committed(task).hyperparameters
    config = load_config(task, "full").model_dump()
    added = {key: value for key, value in ADDED_SINCE.get(task, {}).items() if key not in hyperparameters["train"]}
    assert {**hyperparameters["train"], **added} == config["train"]
    assert hyperparameters.get("tokenizer", config.get("tokenizer")) == config.get("tokenizer")
    assert {k: hyperparameters["model"][k] for k in config["model"]} == config["model"]
