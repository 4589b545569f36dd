"""The manifest that describes one exported model version: `models/<task>/<version>/manifest.json`.

Training writes it, the service reads it. Every file of the version is listed with its
sha256 so that a server never runs a graph that differs from the one that was evaluated.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import (BaseModel, ConfigDict, Field, SerializeAsAny, ValidationInfo, field_validator,
                      model_validator)

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FileEntry(BaseModel):
    sha256: str
    bytes: int


class TensorSpec(BaseModel):
    name: str
    dtype: str
    # A dimension is an int when fixed, a name when dynamic (e.g. "batch").
    shape: list[int | str]


class GraphSpec(BaseModel):
    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class DataSource(BaseModel):
    package: str
    version: str
    file: str
    sha256: str
    license: str
    splits: dict[str, int]
    extra: dict[str, Any] = Field(default_factory=dict)


class Preprocessing(BaseModel):
    """How raw input becomes graph input; one typed model per task, validated when a model
    loads, so a missing or misspelt field is named at start-up, not met at the first request."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SentimentPreprocessing(Preprocessing):
    tokenizer: str = Field(description="the word tokenizer's file in the version folder")
    max_tokens: int = Field(gt=0, description="tokens the classifier reads at most")
    head_tokens: int = Field(ge=0, description="of those, taken from the start; the rest from the end")
    labels: list[str] = Field(min_length=2, max_length=2, description="class names, in the logits' order")

    @model_validator(mode="after")
    def head_within_max(self) -> "SentimentPreprocessing":
        if self.head_tokens > self.max_tokens:
            raise ValueError(f"head_tokens ({self.head_tokens}) is more than max_tokens ({self.max_tokens})")
        return self


class RecurrentState(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)


class BarClockSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    module: str
    size: int = Field(gt=0)
    inputs: dict[str, str] = Field(description="graph -> the name of its clock input")
    meaning: str


class MusicPreprocessing(Preprocessing):
    vocabulary: str = Field(description="the character vocabulary's file in the version folder")
    tune_separator: str
    unknown_characters: str = Field(description="what happens to characters outside the vocabulary")
    state: RecurrentState
    bar_clock: BarClockSpec | None = Field(None, description="for graphs that read the bar clock (music/4 on)")


class SpecialTokens(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pad: int
    unk: int
    bos: int
    eos: int


class DecoderState(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    decoder_hidden: int = Field(gt=0)


class TranslatePreprocessing(Preprocessing):
    tokenizer: str = Field(description="the subword tokenizer (both languages) in the version folder")
    max_source_tokens: int = Field(gt=0, description="source subwords the encoder reads at most")
    special_tokens: SpecialTokens
    state: DecoderState


# The precisions a version may carry. fp32 is the exported graphs themselves (`graphs`); the
# others are variants of them (`precisions`), each with its own measured quality.
PRECISIONS = ("fp32", "int8", "fp16")


class PrecisionVariant(BaseModel):
    """The version's graphs in another precision: same inputs and outputs, other files, its
    quality measured on the same test split, and whether that is close enough to fp32 to serve."""

    model_config = ConfigDict(extra="forbid")

    graphs: dict[str, str] = Field(description="graph name -> its file in this precision")
    method: str = Field(description="how the files were made from the fp32 graphs")
    device: str = Field(description="where this precision is meant to run: cpu or cuda")
    metrics: dict[str, Any] = Field(default_factory=dict, description="evaluate's metrics with these graphs")
    quality: dict[str, Any] = Field(
        default_factory=dict, description="per headline metric: fp32, this precision, the change and the tolerance")
    servable: bool = Field(False, description="every headline metric within its tolerance of fp32")
    reason: str = Field("", description="why it is (not) served")


PREPROCESSING: dict[str, type[Preprocessing]] = {
    "sentiment": SentimentPreprocessing, "music": MusicPreprocessing, "translate": TranslatePreprocessing}


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    name: str
    version: str
    task: str
    created_at: str
    description: str = ""
    files: dict[str, FileEntry]
    graphs: dict[str, GraphSpec]
    opset: int
    torch_version: str
    onnx_version: str
    # How raw input becomes graph input: tokenizer file, truncation, labels... (typed per task)
    preprocessing: SerializeAsAny[Preprocessing]
    data: DataSource
    hyperparameters: dict[str, Any]
    training: dict[str, Any]
    metrics: dict[str, Any]
    precisions: dict[str, PrecisionVariant] = Field(default_factory=dict)

    @model_validator(mode="after")
    def variants_complete(self) -> "Manifest":
        for precision, variant in self.precisions.items():
            if precision not in PRECISIONS or precision == "fp32":
                raise ValueError(f"precision {precision!r}: a variant is one of {', '.join(PRECISIONS[1:])}")
            if set(variant.graphs) != set(self.graphs):
                raise ValueError(f"precision {precision}: graphs {sorted(variant.graphs)}, the version has "
                                 f"{sorted(self.graphs)}")
            unlisted = [f for f in variant.graphs.values() if f not in self.files]
            if unlisted:
                raise ValueError(f"precision {precision}: {', '.join(unlisted)} not in files")
        return self

    def graph_files(self, precision: str = "fp32") -> dict[str, str]:
        """Graph name -> file, in `precision`."""
        if precision == "fp32":
            return {name: graph.file for name, graph in self.graphs.items()}
        if precision not in self.precisions:
            raise KeyError(f"{self.id} has no {precision} graphs (it has: fp32"
                           + "".join(f", {p}" for p in self.precisions) + ")")
        return dict(self.precisions[precision].graphs)

    @field_validator("preprocessing", mode="before")
    @classmethod
    def typed_for_its_task(cls, value: Any, info: ValidationInfo) -> Preprocessing:
        task = info.data.get("task")
        if task not in PREPROCESSING:
            raise ValueError(f"no preprocessing type for task {task!r}; known: {', '.join(PREPROCESSING)}")
        if isinstance(value, PREPROCESSING[task]):
            return value
        return PREPROCESSING[task].model_validate(value.model_dump() if isinstance(value, BaseModel) else value)

    @property
    def id(self) -> str:
        return f"{self.name}/{self.version}"

    @classmethod
    def load(cls, model_dir: Path) -> "Manifest":
        return cls.model_validate_json((Path(model_dir) / MANIFEST_NAME).read_text())

    def save(self, model_dir: Path) -> Path:
        """Write manifest.json in one rename: a service starting meanwhile reads the old one or the new one."""
        path = Path(model_dir) / MANIFEST_NAME
        scratch = path.with_name(f".{MANIFEST_NAME}.{os.getpid()}")
        scratch.write_text(json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n")
        os.replace(scratch, path)
        return path

    def verify_files(self, model_dir: Path) -> list[str]:
        """Return one line per listed file that is missing or whose sha256 differs (empty: all good)."""
        problems = []
        for name, entry in self.files.items():
            path = Path(model_dir) / name
            if not path.is_file():
                problems.append(f"{name}: missing")
            elif sha256_file(path) != entry.sha256:
                problems.append(f"{name}: sha256 does not match the manifest")
        return problems


def newest_version_dir(task_dir: Path) -> Path | None:
    """The newest version under `<models>/<task>/` that has a manifest; numeric versions
    compare as numbers (as in Triton's model repository), others after them by name."""
    task_dir = Path(task_dir)
    # Hidden folders are a version being written (or left by a killed export): never served.
    versions = [v for v in task_dir.iterdir() if not v.name.startswith(".") and (v / MANIFEST_NAME).is_file()] \
        if task_dir.is_dir() else []
    if not versions:
        return None
    return max(versions, key=lambda v: (v.name.isdigit(), int(v.name) if v.name.isdigit() else 0, v.name))


def file_entries(model_dir: Path, names: list[str]) -> dict[str, FileEntry]:
    model_dir = Path(model_dir)
    return {
        name: FileEntry(sha256=sha256_file(model_dir / name), bytes=(model_dir / name).stat().st_size)
        for name in names
    }
