"""The committed sentiment model's members were trained with what the `full` and
`full_pretrained` profiles say today, so the profiles reproduce it."""

from __future__ import annotations

from seqserve.manifest import Manifest, newest_version_dir
from training.config import REPO_ROOT, load_config


def test_the_sentiment_profiles_are_the_committed_members_settings():
    manifest = Manifest.load(newest_version_dir(REPO_ROOT / "models" / "sentiment"))
    members = manifest.hyperparameters.get("members", [manifest.hyperparameters])
    for member, profile in zip(members, ["full", "full_pretrained"]):
        config = load_config("sentiment", profile)
        assert member["train"] == config["train"] and member["tokenizer"] == config["tokenizer"]
        assert {k: member["model"][k] for k in ("embed_dim", "hidden_size", "attention_pooling")} == \
            {k: config["model"][k] for k in ("embed_dim", "hidden_size", "attention_pooling")}
        assert member.get("pretrain") == (config["pretrain"] if config["pretrain"]["epochs"] else None)
