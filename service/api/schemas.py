"""Request and response bodies, exactly as docs/api.md fixes them.

Validation is bounded: a request body is checked for unknown keys and over-long lists before
any field is validated (one error, a few names), so no body under the size limit costs more
than milliseconds, and text limits count the text as the models read it (NFKC-normalised:
one character can expand to several).
"""

from __future__ import annotations

import itertools
import unicodedata
from typing import Annotated, Any, Literal

from annotated_types import MaxLen
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema,
                      model_validator)
from pydantic_core import PydanticCustomError, ValidationError

from seqserve.abc import MAX_TUNE_CHARS
from service.api.errors import ErrorCode

NAMES_SHOWN = 3  # unknown keys named in an error, at most
NAME_CHARS = 40  # characters of each


def _short(name: object) -> str:
    text = str(name)
    return text if len(text) <= NAME_CHARS else text[:NAME_CHARS] + "…"


def normalised_at_most(max_chars: int):
    """Refuses a text whose NFKC normalisation (what tokenizers and the character vocabulary
    read) is longer than `max_chars`; NFKC of a text within the raw limit takes microseconds."""

    def check(text: str | None) -> str | None:
        if text is not None and len(text) > max_chars // 18 and len(unicodedata.normalize("NFKC", text)) > max_chars:
            # NFKC expands one character to at most 18; shorter texts cannot exceed the limit
            raise PydanticCustomError("string_too_long_normalised",
                                      "String should have at most {max} characters after NFKC normalisation",
                                      {"max": max_chars})
        return text

    return AfterValidator(check)


def trimmed_text(max_chars: int) -> object:
    """A text whose limits count it after trimming white space, as docs/api.md fixes them, and after
    NFKC normalisation. JSON Schema's minLength and maxLength would count the text as sent (a
    schema that lets through fewer texts than the API takes), so the schema says "some
    non-space character" with a pattern, and the upper limit with an extension key."""
    return Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=max_chars),
                     normalised_at_most(max_chars),
                     WithJsonSchema({"type": "string", "pattern": r"\S", "x-max-length-after-trimming": max_chars})]


class RequestBody(BaseModel):
    """A request body: strict types, unknown keys refused. Both checks that could cost time in
    proportion to a hostile body (one error per unknown key, one per item of a list far over
    its limit) run first, on the raw JSON, and stop at the first problem."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="wrap")
    @classmethod
    def cheap_checks_first(cls, data: Any, handler):
        if isinstance(data, dict):
            if not data.keys() <= cls.model_fields.keys():  # a set operation in C: fast for any number of keys
                unknown = itertools.islice((key for key in data if key not in cls.model_fields), NAMES_SHOWN)
                raise ValidationError.from_exception_data(cls.__name__, [
                    {"type": "extra_forbidden", "loc": (_short(key),), "input": None} for key in unknown])
            for name, field in cls.model_fields.items():
                value = data.get(name)
                limit = next((m.max_length for m in field.metadata if isinstance(m, MaxLen)), None)
                if isinstance(value, list) and limit is not None and len(value) > limit:
                    raise ValidationError.from_exception_data(cls.__name__, [{
                        "type": "too_long", "loc": (name,), "input": None,
                        "ctx": {"field_type": "List", "max_length": limit, "actual_length": len(value)}}])
        return handler(data)


# The largest body an endpoint can need (every character escaped as \uXXXX, 6 bytes, plus room),
# when that is below the MAX_BODY_BYTES setting: parsing JSON holds the event loop, so a body
# is never bigger than what a legitimate request to its endpoint can be.
ENDPOINT_BODY_BYTES = {"/translate": 256 * 1024, "/generate-music": 64 * 1024, "/generate-music/midi": 64 * 1024}

MAX_TEXT_CHARS = 20_000
MAX_SENTIMENT_TEXTS = 64

ReviewText = trimmed_text(MAX_TEXT_CHARS)
# Documents "exactly one of text or texts" in the OpenAPI schema (the validator enforces it).
EXACTLY_ONE_TEXT_FIELD = [{"required": ["text"]}, {"required": ["texts"]}]


class OneOrManyTexts(RequestBody):
    """A body with exactly one of `text` (one result) or `texts` (results in input order);
    each subclass declares the two fields with its own limits."""

    text: str | None
    texts: list[str] | None

    @model_validator(mode="after")
    def exactly_one(self) -> "OneOrManyTexts":
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' or 'texts'")
        return self

    @property
    def all_texts(self) -> list[str]:
        return [self.text] if self.text is not None else self.texts


class SentimentRequest(OneOrManyTexts):
    """Exactly one of `text` (one result) or `texts` (1 to 64, results in input order)."""

    model_config = ConfigDict(json_schema_extra={
        "oneOf": EXACTLY_ONE_TEXT_FIELD,
        "examples": [{"text": "A gorgeous, patient film; the lead performance is quietly brilliant."},
                     {"texts": ["Loved every minute.", "What a waste of two hours."]}]})

    # Typed without None (a null is refused), defaulting to absent: exactly one is given.
    text: ReviewText = Field(None, description="1 to 20,000 characters after trimming white space")
    texts: Annotated[list[ReviewText], Field(min_length=1, max_length=MAX_SENTIMENT_TEXTS)] = Field(
        None, description="1 to 64 texts, each 1 to 20,000 characters after trimming")


class SentimentProbabilities(BaseModel):
    negative: float = Field(ge=0, le=1)
    positive: float = Field(ge=0, le=1)


class SentimentResult(BaseModel):
    label: Literal["negative", "positive"]
    score: float = Field(ge=0, le=1, description="probability of `label`")
    probabilities: SentimentProbabilities


class SentimentResponse(SentimentResult):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "label": "positive", "score": 0.97,
        "probabilities": {"negative": 0.03, "positive": 0.97}, "model": "sentiment/6"}]})

    model: str = Field(description="<name>/<version> of the model that answered")


class SentimentBatchResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "results": [{"label": "positive", "score": 0.98, "probabilities": {"negative": 0.02, "positive": 0.98}},
                    {"label": "negative", "score": 0.99, "probabilities": {"negative": 0.99, "positive": 0.01}}],
        "model": "sentiment/6"}]})

    results: list[SentimentResult]
    model: str


class ErrorBody(BaseModel):
    """Every error answer has this shape."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "error": "validation_error", "message": "body.text: String should have at least 1 character",
        "fields": [{"loc": ["body", "text"], "message": "String should have at least 1 character"}]}]})

    error: ErrorCode = Field(description="a stable code; each route lists the ones it can give, per status")
    message: str
    fields: list[dict] | None = Field(None, description="validation errors (at most 5): where, and what is wrong")


class HealthResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"]


class ReadinessResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"status": "ready", "models": {"sentiment": "ready"}},
        {"status": "not ready", "models": {"sentiment": "ValueError: files do not match the manifest: "
                                                        "model.onnx: sha256 does not match the manifest"}}]})

    status: Literal["ready", "not ready"]
    models: dict[str, str] = Field(description="model -> 'ready' or why it is not")


class ModelInfo(BaseModel):
    name: str
    version: str
    task: str
    ready: bool
    error: str | None
    provider: str | None = Field(description="execution provider in use, read from the ONNX Runtime session")
    providers: dict[str, list[str]]
    precision: str = Field(description="the precision of the graphs served: fp32, int8 or fp16")
    precision_reason: str = Field(description="why that precision (SEQSERVE_PRECISION and the manifest's verdicts)")
    graphs: dict[str, dict]
    files: dict[str, str] = Field(description="file -> sha256")
    metrics: dict = Field(description="the test-split metrics of the graphs served")
    precisions: dict[str, dict] = Field(
        description="the version's other precisions: whether each may be served, why, and its headline metrics vs fp32")


class ModelsResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"models": [{
        "name": "sentiment", "version": "1", "task": "sentiment", "ready": True, "error": None,
        "provider": "CPUExecutionProvider", "providers": {"classifier": ["CPUExecutionProvider"]},
        "precision": "int8",
        "precision_reason": "auto: int8: served: every headline metric within its tolerance of fp32 on the test split",
        "graphs": {"classifier": {"file": "model.onnx",
                                  "inputs": [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]},
                                             {"name": "lengths", "dtype": "int64", "shape": ["batch"]}],
                                  "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 2]}]}},
        "files": {"model.onnx": "91f3489b…", "tokenizer.json": "25016551…"},
        "metrics": {"test_imdb": {"accuracy": 0.9213, "examples": 2490}},
        "precisions": {"int8": {"servable": True, "reason": "served: every headline metric within its tolerance of "
                                                            "fp32 on the test split",
                                "quality": {"test_imdb.accuracy": {"fp32": 0.9201, "this": 0.9213}}}}}]}]})

    models: list[ModelInfo]


MAX_PROMPT_CHARS = 5_000
MAX_MUSIC_LENGTH = 5_000


class MusicRequest(RequestBody):
    """Everything is optional: an empty body starts a new tune with the defaults."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"max_length": 600, "temperature": 0.9, "top_k": 20, "seed": 7},
        {"prompt": "X:1\nT:The Kesh\nM:6/8\nL:1/8\nK:G\n", "max_length": 400, "seed": 1},
        {"max_length": 300, "seed": 3, "stream": True},
        {"max_length": 2000, "temperature": 0.9, "seed": 7, "stop_at_end_of_tune": True}]})

    prompt: Annotated[str | None, normalised_at_most(MAX_PROMPT_CHARS)] = Field(
        None, max_length=MAX_PROMPT_CHARS,
        description="ABC text to continue, at most 5,000 characters also after NFKC normalisation; default: the "
                    "start of a new tune (`X:1`). Characters outside the model's vocabulary are dropped after "
                    "NFKC normalisation and listed in `ignored_characters`.")
    max_length: int = Field(1000, ge=1, le=MAX_MUSIC_LENGTH, description="characters to generate")
    temperature: float = Field(1.0, gt=0, le=2, description="> 0 and <= 2; lower is more conservative")
    top_k: int | None = Field(None, ge=1, description="sample from the k likeliest characters (1 to vocabulary size)")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="the same seed and request give the same output")
    stream: bool = Field(False, description="true: answer as Server-Sent Events; false: as JSON; absent: as the "
                                            "Accept header prefers (text/event-stream over application/json)")
    stop_at_end_of_tune: bool = Field(False, description="stop as soon as the first complete tune is written (the "
                                                         "blank line that ends it), before `max_length`")


class Tune(BaseModel):
    abc: str
    title: str | None
    valid: bool = Field(description="X:, T:, M:, L:, K: present; music21 parses it; >= 90% of bars fit M: and L:; "
                                    f"at most {MAX_TUNE_CHARS:,} characters (longer tunes are not checked)")
    reason: str | None = Field(None, description="why the tune is not valid: '<kind>: <detail>', kind one of "
                                                 "headers, parse, bars, length, timeout")


class MusicResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "abc": "X:1\nT:The Humours of Ballyconnell\nM:6/8\nL:1/8\nK:D\nA|dfe dBA|...\n\n",
        "tunes": [{"abc": "X:1\nT:The Humours of Ballyconnell\nM:6/8\nL:1/8\nK:D\nA|dfe dBA|...",
                   "title": "The Humours of Ballyconnell", "valid": True}],
        "seed": 7, "model": "music/4", "ignored_characters": [], "finish_reason": "length"}]})

    abc: str = Field(description="prompt + generated text")
    tunes: list[Tune] = Field(description="the complete tunes in the output (each ends with a blank line)")
    seed: int
    model: str
    ignored_characters: list[str] = Field(description="prompt characters the model cannot read, dropped")
    finish_reason: Literal["length", "end_of_tune"] = Field(
        description="why generation stopped: `max_length` characters written, or (with `stop_at_end_of_tune`) "
                    "the first complete tune")


class MusicChunk(BaseModel):
    """The data of a streamed `chunk` event: the next characters of `abc`, in order (the first
    chunk is the prompt as the model reads it), so the chunks joined are the result's `abc`."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"text": "X:1\n"}, {"text": "T:The Humours of "}]})

    text: str


class MusicStreamError(BaseModel):
    """The data of a streamed `error` event: the stream failed after its 200 status line was sent."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "error": "shutting_down", "message": "the server is shutting down; retry on another replica"}]})

    error: Literal["timeout", "shutting_down", "internal_error"]
    message: str


class MidiRequest(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"abc": "X:1\nT:Example\nM:4/4\nL:1/8\nK:D\nDEFG ABcd|dcBA GFED|DEFG ABcd|d8|]"}]})

    abc: str = Field(min_length=1, max_length=MAX_TUNE_CHARS,
                     description=f"one tune in ABC notation, at most {MAX_TUNE_CHARS:,} characters (music21's "
                                 "cost grows faster than the tune: this keeps a conversion near a second)")


MAX_TRANSLATE_CHARS = 1_000
MAX_TRANSLATE_TEXTS = 32

EnglishText = trimmed_text(MAX_TRANSLATE_CHARS)


class TranslateRequest(OneOrManyTexts):
    """Exactly one of `text` (one result) or `texts` (1 to 32, results in input order)."""

    model_config = ConfigDict(json_schema_extra={"oneOf": EXACTLY_ONE_TEXT_FIELD, "examples": [
        {"text": "I have never been to Spain.", "beam_size": 4},
        {"texts": ["Where is the station?", "Tom bought three books."], "beam_size": 1, "return_attention": True}]})

    text: EnglishText = Field(None, description="English, 1 to 1,000 characters after trimming")
    texts: Annotated[list[EnglishText], Field(min_length=1, max_length=MAX_TRANSLATE_TEXTS)] = Field(
        None, description="1 to 32 English texts, each 1 to 1,000 characters after trimming")
    beam_size: int = Field(4, ge=1, le=8, description="1: greedy decoding; 2 to 8: beam search")
    max_length: int = Field(128, ge=1, le=256, description="at most this many output subword tokens")
    return_attention: bool = Field(False, description="include the attention matrix (target x source tokens)")


class TranslationResult(BaseModel):
    translation: str = Field(description="Spanish")
    source_tokens: list[str] = Field(description="the subwords the model read ('▁' starts a word; [UNK]: a "
                                                 "character it never saw in training)")
    target_tokens: list[str] = Field(description="the subwords it wrote, without the end token")
    attention: list[list[float]] | None = Field(
        description="attention[i][j]: weight of target token i on source token j; each row sums to 1")
    source_truncated: bool = Field(description="the text was longer than the model reads; only its start was translated")


class TranslateResponse(TranslationResult):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "translation": "Nunca he estado en España.", "source_tokens": ["▁I", "▁have", "▁never", "▁been", "▁to",
                                                                       "▁Spain", "."],
        "target_tokens": ["▁Nunca", "▁he", "▁estado", "▁en", "▁España", "."], "attention": None,
        "source_truncated": False, "model": "translate/2"}]})

    model: str = Field(description="<name>/<version> of the model that answered")


class TranslateBatchResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "results": [{"translation": "¿Dónde está la estación?", "source_tokens": ["▁Where", "▁is", "▁the", "▁station", "?"],
                     "target_tokens": ["▁", "¿", "Dónde", "▁está", "▁la", "▁estación", "?"],
                     "attention": None, "source_truncated": False}],
        "model": "translate/2"}]})

    results: list[TranslationResult]
    model: str
