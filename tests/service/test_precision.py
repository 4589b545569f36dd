"""Which graphs the service loads: SEQSERVE_PRECISION against the manifest's measured verdicts."""

from __future__ import annotations

import pytest

from seqserve.manifest import Manifest, PrecisionVariant, newest_version_dir
from service.runtime import choose_precision


def manifest_with(models_dir, **variants: PrecisionVariant) -> Manifest:
    manifest = Manifest.load(newest_version_dir(models_dir / "sentiment"))
    files = {**manifest.files}
    for variant in variants.values():
        files |= {f: manifest.files["model.onnx"] for f in variant.graphs.values()}
    return manifest.model_copy(update={"precisions": variants, "files": files})


def variant(servable: bool, device: str = "cpu", suffix: str = "int8") -> PrecisionVariant:
    return PrecisionVariant(graphs={"classifier": f"model.{suffix}.onnx"}, method="test", device=device,
                            servable=servable, reason="served: within" if servable else "not served: accuracy fell")


@pytest.mark.parametrize("requested, device, variants, expected", [
    ("auto", "cpu", {"int8": variant(True)}, "int8"),
    ("auto", "cpu", {"int8": variant(False)}, "fp32"),  # outside the tolerance: never served
    ("auto", "cpu", {}, "fp32"),
    ("auto", "cuda", {"int8": variant(True)}, "fp32"),  # auto on CUDA wants fp16, measured
    ("auto", "cuda", {"fp16": variant(True, "cuda", "fp16")}, "fp16"),
    ("fp32", "cpu", {"int8": variant(True)}, "fp32"),
    ("int8", "cpu", {"int8": variant(False)}, "fp32"),  # even when asked for
    ("int8", "cuda", {"int8": variant(True)}, "int8"),  # asked for: served, the reason says where it is meant to run
    ("fp16", "cpu", {}, "fp32"),
])
def test_the_precision_served(models_dir, requested, device, variants, expected):
    precision, reason = choose_precision(manifest_with(models_dir, **variants), requested, device)
    assert precision == expected, reason
    assert reason


def test_a_variant_that_is_not_served_says_why(models_dir):
    precision, reason = choose_precision(manifest_with(models_dir, int8=variant(False)), "auto", "cpu")
    assert precision == "fp32" and "accuracy fell" in reason


def test_a_variant_must_cover_every_graph_and_list_its_files(models_dir):
    manifest = Manifest.load(newest_version_dir(models_dir / "sentiment"))
    data = manifest.model_dump()
    data["precisions"] = {"int8": {"graphs": {"classifier": "missing.onnx"}, "method": "x", "device": "cpu"}}
    with pytest.raises(ValueError, match="not in files"):
        Manifest.model_validate(data)
    data["precisions"] = {"int8": {"graphs": {"other": "model.onnx"}, "method": "x", "device": "cpu"}}
    with pytest.raises(ValueError, match="graphs"):
        Manifest.model_validate(data)
