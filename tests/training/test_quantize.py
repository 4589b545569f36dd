"""INT8 variants: quantize a version's graphs, evaluate them, and judge them against fp32."""

from __future__ import annotations

import shutil

import pytest

from seqserve.manifest import Manifest
from tests.conftest import served
from training.quantize import add_int8, int8_file, judge
from training.sentiment.evaluate import QUALITY, evaluate


def test_judge_serves_only_within_every_tolerance():
    fp32 = {"a": {"accuracy": 0.90}, "loss": 1.00}
    quality = {"a.accuracy": ("higher", 0.01), "loss": ("lower", 0.01)}
    figures, servable, reason = judge(fp32, {"a": {"accuracy": 0.895}, "loss": 1.005}, quality)
    assert servable and figures["a.accuracy"]["within"] and figures["loss"]["change"] == pytest.approx(0.005)
    figures, servable, reason = judge(fp32, {"a": {"accuracy": 0.88}, "loss": 0.99}, quality)
    assert not servable and "a.accuracy 0.88 vs fp32 0.9" in reason and "loss" not in reason
    assert not judge(fp32, {"loss": 1.0}, quality)[1], "a headline metric not measured is no pass"


def fp32_copy(tmp_path):
    """The committed sentiment version without any variant: its fp32 graph, tokenizer, manifest."""
    source = served("sentiment")
    manifest = Manifest.load(source)
    target = tmp_path / "3"
    target.mkdir()
    for name in (manifest.graphs["classifier"].file, manifest.preprocessing.tokenizer):
        shutil.copy(source / name, target / name)
    manifest.files = {name: entry for name, entry in manifest.files.items() if (target / name).exists()}
    manifest.precisions = {}
    manifest.save(target)
    return target


def test_add_int8_writes_evaluates_and_records_the_variant(data_cache, tmp_path):
    model_dir = fp32_copy(tmp_path)
    manifest = add_int8(model_dir, lambda d, precision: evaluate(d, limit=300, precision=precision), QUALITY)
    variant = manifest.precisions["int8"]
    assert variant.graphs == {"classifier": int8_file("model.onnx")} == {"classifier": "model.int8.onnx"}
    assert (model_dir / "model.int8.onnx").stat().st_size < (model_dir / "model.onnx").stat().st_size / 2
    assert not manifest.verify_files(model_dir), "the new file is listed with its sha256"
    assert variant.metrics["evaluated_with"].endswith("int8)")
    assert set(variant.quality) == set(QUALITY) and variant.reason
    assert Manifest.load(model_dir).precisions["int8"] == variant, "saved"
    # Judged against the fp32 figures in the manifest: an fp32 figure it cannot reach fails it.
    manifest.metrics["test_imdb"]["accuracy"] = 1.0
    manifest.save(model_dir)
    refused = add_int8(model_dir, lambda d, precision: evaluate(d, limit=300, precision=precision), QUALITY)
    assert not refused.precisions["int8"].servable and "test_imdb.accuracy" in refused.precisions["int8"].reason
