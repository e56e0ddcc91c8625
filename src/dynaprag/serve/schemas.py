"""Request and response bodies of the HTTP API: the OpenAI shapes plus a ``dynaprag`` extension.

Requests follow OpenAI's ``/v1/chat/completions`` and ``/v1/completions`` so the official
clients work unchanged; the method and its knobs travel in an extra top-level field
(``extra_body={"dynaprag": {"method": "flare", "options": {...}}}`` with the Python client).
Responses carry the answer's trace (retrievals, queries, hits, per-token signals) in a
``dynaprag`` field that OpenAI clients keep as an extra attribute.

Validation is strict (unknown top-level keys are kept, as OpenAI clients send fields this
server ignores, but every known field is type-checked) so a wrong type gets a 400 that names
the field instead of an error deep inside decoding.
"""
from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

# --- requests -----------------------------------------------------------------------------


class DynapragOptions(BaseModel):
    """The extension field: which method answers and with which knobs."""

    model_config = ConfigDict(extra="forbid")

    method: StrictStr | None = Field(default=None, description="a name from GET /v1/methods; default: the server's method")
    options: dict[str, Any] = Field(default_factory=dict, description="method knobs, e.g. {'threshold': 1.0}")
    include_tokens: StrictBool = Field(default=True, description="return per-token signals in the trace")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: StrictStr
    text: StrictStr | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type in ("text", "input_text"))


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: StrictBool = False


class _GenerationFields(BaseModel):
    """Fields shared by both completion endpoints."""

    model_config = ConfigDict(extra="allow")

    model: StrictStr
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: StrictInt = Field(default=1, ge=1, le=1, description="only one choice per request")
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    user: StrictStr | None = None
    dynaprag: DynapragOptions = Field(default_factory=DynapragOptions)


class ChatCompletionRequest(_GenerationFields):
    """POST /v1/chat/completions: the question is the last user message."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)

    @field_validator("messages")
    @classmethod
    def _has_user_message(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.role == "user" and m.text().strip() for m in messages):
            raise ValueError("needs at least one user message with text: it is the question to answer")
        return messages

    def question(self) -> str:
        return next(m.text() for m in reversed(self.messages) if m.role == "user" and m.text().strip())

    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_GenerationFields):
    """POST /v1/completions: the prompt is the question (one prompt per request)."""

    prompt: StrictStr | list[StrictStr]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt: str | list[str]) -> str | list[str]:
        texts = [prompt] if isinstance(prompt, str) else prompt
        if len(texts) != 1:
            raise ValueError(f"send exactly one prompt per request (got {len(texts)})")
        if not texts[0].strip():
            raise ValueError("the prompt is empty")
        return prompt

    def question(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def token_budget(self) -> int | None:
        return self.max_tokens


class RetrieveRequest(BaseModel):
    """POST /v1/retrieve: search only, no generation."""

    model_config = ConfigDict(extra="forbid")

    query: StrictStr | list[StrictStr]
    k: StrictInt = Field(default=3, ge=1, le=100)

    def queries(self) -> list[str]:
        queries = [self.query] if isinstance(self.query, str) else list(self.query)
        if not queries or any(not q.strip() for q in queries):
            raise ValueError("query: every query must be a non-empty string")
        return queries


# --- responses ----------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    dynaprag: dict[str, Any]


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    dynaprag: dict[str, Any]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "dynaprag"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """The OpenAI error shape, which the official clients turn into typed exceptions."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
