"""The KServe manifests (deploy/kserve/) against KServe's own schema: the model classes the
`kserve` package ships (kserve==0.21.0, read from its wheel, not installed: its dependencies
are a server of their own). Every key must be one KServe knows, with the right kind of value;
the containers are checked as Kubernetes containers by kubernetes-validate --strict."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.network  # the kserve wheel, from PyPI

REPO_ROOT = Path(__file__).resolve().parents[2]
KSERVE = "kserve==0.21.0"
ROOTS = {"ServingRuntime": "V1alpha1ServingRuntime", "InferenceService": "V1beta1InferenceService"}


@pytest.fixture(scope="module")
def kserve_schema(tmp_path_factory) -> dict[str, dict[str, str]]:
    """class name -> {JSON key: openapi type}, from kserve/models/*.py in the wheel."""
    folder = tmp_path_factory.mktemp("kserve")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder), KSERVE],
                   check=True, timeout=300)
    wheel = next(folder.glob("kserve-*.whl"))
    schema = {}
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if not (name.startswith("kserve/models/") and name.endswith(".py")):
                continue
            for node in ast.parse(archive.read(name)).body:
                if isinstance(node, ast.ClassDef):
                    found = {t.targets[0].id: ast.literal_eval(t.value) for t in node.body
                             if isinstance(t, ast.Assign) and isinstance(t.targets[0], ast.Name)
                             and t.targets[0].id in ("openapi_types", "attribute_map")}
                    if len(found) == 2:
                        schema[node.name] = {found["attribute_map"][k]: v for k, v in found["openapi_types"].items()}
    assert "V1beta1InferenceService" in schema and "V1alpha1ServingRuntimeSpec" in schema
    return schema


def check(value, kind: str, schema: dict, where: str, containers: list) -> list[str]:
    """Problems of `value` against openapi type `kind` (KServe's classes in depth; Kubernetes'
    own types by their JSON kind, containers collected for kubernetes-validate)."""
    if kind.startswith("list["):
        if not isinstance(value, list):
            return [f"{where}: expected a list"]
        return [p for i, item in enumerate(value) for p in check(item, kind[5:-1], schema, f"{where}[{i}]", containers)]
    if kind.startswith("dict("):
        inner = kind[5:-1].split(", ", 1)[1]
        if not isinstance(value, dict):
            return [f"{where}: expected a mapping"]
        return [p for k, v in value.items() for p in check(v, inner, schema, f"{where}.{k}", containers)]
    simple = {"str": str, "int": int, "bool": bool, "float": (int, float)}
    if kind in simple:
        return [] if isinstance(value, simple[kind]) and not (kind == "int" and isinstance(value, bool)) \
            else [f"{where}: expected {kind}, got {value!r}"]
    if kind in schema:
        if not isinstance(value, dict):
            return [f"{where}: expected an object ({kind})"]
        fields = schema[kind]
        problems = [f"{where}.{key}: not a field of {kind}" for key in value if key not in fields]
        return problems + [p for key, item in value.items() if key in fields
                           for p in check(item, fields[key], schema, f"{where}.{key}", containers)]
    if kind == "V1Container":
        containers.append(value)
    return [] if isinstance(value, (dict, str, int)) else [f"{where}: unexpected {type(value).__name__}"]


@pytest.mark.parametrize("manifest", ["servingruntime.yaml", "inferenceservice.yaml"])
def test_kserve_manifests_match_kserve_s_schema(manifest, kserve_schema, tmp_path):
    document = yaml.safe_load((REPO_ROOT / "deploy" / "kserve" / manifest).read_text())
    containers: list[dict] = []
    problems = check(document, ROOTS[document["kind"]], kserve_schema, document["kind"], containers)
    assert not problems, problems
    assert document["apiVersion"] in ("serving.kserve.io/v1alpha1", "serving.kserve.io/v1beta1")
    if containers:  # each container as Kubernetes sees it
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": {"containers": containers}}
        path = tmp_path / "pod.yaml"
        path.write_text(yaml.safe_dump(pod))
        result = subprocess.run([str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", str(path)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_runtime_speaks_v2_with_the_protocol_s_probes_on_one_gpu():
    runtime = yaml.safe_load((REPO_ROOT / "deploy" / "kserve" / "servingruntime.yaml").read_text())
    service = yaml.safe_load((REPO_ROOT / "deploy" / "kserve" / "inferenceservice.yaml").read_text())
    container = runtime["spec"]["containers"][0]
    assert runtime["spec"]["protocolVersions"] == ["v2"] and service["spec"]["predictor"]["model"]["protocolVersion"] == "v2"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    port = {e["name"]: e["value"] for e in container["env"]}["SEQSERVE_PORT"]
    assert int(port) == container["ports"][0]["containerPort"] == container["readinessProbe"]["httpGet"]["port"]
    assert service["spec"]["predictor"]["model"]["runtime"] == runtime["metadata"]["name"]
    query = service["spec"]["predictor"]["autoScaling"]["metrics"][0]["podmetric"]["metric"]["query"]
    assert "seqserve_queue_depth" in query  # a metric the service exports (tests/service/test_operations.py)


def test_the_check_refuses_what_kserve_does_not_know(kserve_schema):
    typo = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "spec": {"predictor": {"modle": {"runtime": "seqserve"}, "minReplicas": "one"}}}
    problems = check(typo, "V1beta1InferenceService", kserve_schema, "InferenceService", [])
    assert any("modle" in p for p in problems) and any("minReplicas" in p for p in problems)
