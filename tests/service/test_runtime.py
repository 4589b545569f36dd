"""Where sessions run: with SEQSERVE_DEVICE=auto (the default), a host whose ONNX Runtime lists
the CUDA provider but cannot load it (onnxruntime-gpu without a GPU or without CUDA 13) is a
CPU host, so it gets the CPU's precision (int8 where the manifest allows it), not fp32."""

from __future__ import annotations

import pytest

from seqserve.manifest import Manifest, newest_version_dir
from service import runtime
from service.config import Settings


def test_the_probe_model_is_a_one_node_identity_graph():
    helper = pytest.importorskip("onnx.helper")
    from onnx import TensorProto

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8,
                              producer_name="seqserve")
    assert model.SerializeToString() == runtime.PROBE_MODEL


def test_a_listed_cuda_provider_that_cannot_run_is_not_cuda(monkeypatch):
    """What onnxruntime-gpu does on a host without a GPU or without CUDA 13: it lists the
    provider, and a session falls back to the CPU. (Here the list is made to say CUDA, so the
    probe runs on any host; on one where CUDA does run, there is nothing to check.)"""
    import onnxruntime as ort

    if runtime.cuda_loads():
        pytest.skip("CUDA runs on this host")
    monkeypatch.setattr(ort, "get_available_providers", lambda: [runtime.CUDA, runtime.CPU])
    runtime.cuda_loads.cache_clear()
    try:
        assert runtime.cuda_loads() is False
        assert runtime.planned_device(Settings(device="auto")) == "cpu"
    finally:
        runtime.cuda_loads.cache_clear()


def test_auto_plans_the_device_the_probe_finds(models_dir):
    settings = Settings(models_dir=models_dir, device="auto", precision="auto")
    loads = runtime.cuda_loads(settings.cuda_device_id)
    assert runtime.planned_device(settings) == ("cuda" if loads else "cpu")
    assert runtime.planned_device(settings.model_copy(update={"device": "cpu"})) == "cpu"
    if loads:
        pytest.skip("CUDA loads on this host: the CPU case below needs a host without it")
    manifest = Manifest.load(newest_version_dir(models_dir / "sentiment"))
    precision, reason = runtime.choose_precision(manifest, settings.precision, runtime.planned_device(settings))
    assert precision == "int8", reason
    session = runtime.create_session(models_dir / "sentiment" / manifest.version / "model.int8.onnx", settings)
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_cuda_provider_options_leave_tf32_off_unless_asked():
    """TF32 moved music/6's chained logits 3.0e-3 from the CPU's on an H200 (8e-6 without):
    the service asks the CUDA provider for full fp32 unless SEQSERVE_CUDA_TF32 says otherwise."""
    assert runtime.cuda_options(Settings())["use_tf32"] == "0"
    assert runtime.cuda_options(Settings(cuda_tf32=True))["use_tf32"] == "1"
