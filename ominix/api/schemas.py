"""Request bodies of the OpenAI-compatible API, as pydantic models.

Ranges follow OpenAI's documented limits so a request OpenAI would reject with 400 is rejected here
too. Unknown fields are ignored (clients send `user`, `store`, `metadata`, ...), as OpenAI does.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_N = 8  # completions per request; each runs its own decode


def _check_keep_alive(v):
    if v is not None:
        from ominix.engine.budget import parse_keep_alive

        parse_keep_alive(v)  # raises ValueError with a readable message
    return v


class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    keep_alive: Union[str, float, None] = None

    @field_validator("keep_alive")
    @classmethod
    def _keep_alive(cls, v):
        return _check_keep_alive(v)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(_Body):
    type: str
    text: Optional[str] = None
    image_url: Union[str, dict, None] = None  # {"url": "data:image/png;base64,...", "detail": ...}


class FunctionCall(_Body):
    name: str
    arguments: str = "{}"


class ToolCallIn(_Body):
    id: Optional[str] = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[ContentPart], None] = None
    name: Optional[str] = None
    tool_calls: Optional[list[ToolCallIn]] = None
    tool_call_id: Optional[str] = None
    reasoning_content: Optional[str] = None

    @model_validator(mode="after")
    def _content_required(self):
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a '{self.role}' message needs content")
        return self


class FunctionDef(_Body):
    name: str = Field(min_length=1, max_length=64)
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    strict: Optional[bool] = None


class Tool(_Body):
    type: Literal["function"]
    function: FunctionDef


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: dict[str, str]


class JSONSchemaFormat(_Body):
    name: str = "response"
    description: Optional[str] = None
    schema_: Optional[dict[str, Any]] = Field(default=None, alias="schema")
    strict: Optional[bool] = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JSONSchemaFormat] = None

    @model_validator(mode="after")
    def _schema_given(self):
        if self.type == "json_schema" and (self.json_schema is None or self.json_schema.schema_ is None):
            raise ValueError("response_format json_schema needs json_schema.schema")
        return self


class StreamOptions(_Body):
    include_usage: bool = False


Stop = Union[str, list[str], None]


class _Sampling(_Body):
    """Fields shared by chat and text completions."""

    model: str = Field(min_length=1)
    max_tokens: Optional[int] = Field(default=None, ge=1)
    temperature: Optional[float] = Field(default=None, ge=0, le=2)
    top_p: Optional[float] = Field(default=None, gt=0, le=1)
    top_k: Optional[int] = Field(default=None, ge=0)  # extension (vLLM/Ollama); 0 = off
    min_p: Optional[float] = Field(default=None, ge=0, le=1)  # extension
    repetition_penalty: Optional[float] = Field(default=None, gt=0)  # extension
    presence_penalty: Optional[float] = Field(default=None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(default=None, ge=-2, le=2)
    logit_bias: Optional[dict[str, float]] = None
    seed: Optional[int] = None
    n: int = Field(default=1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    stop: Stop = None
    user: Optional[str] = None
    keep_alive: Union[str, float, None] = None  # extension (Ollama): "5m", seconds, 0, -1

    @field_validator("keep_alive")
    @classmethod
    def _keep_alive(cls, v):
        return _check_keep_alive(v)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v):
        if isinstance(v, list):
            if len(v) > 4:
                raise ValueError("at most 4 stop sequences are allowed")
            if any(not s for s in v):
                raise ValueError("stop sequences must be non-empty strings")
        if v == "":
            return None
        return v

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v):
        if v is None:
            return v
        for key, value in v.items():
            if not key.lstrip("-").isdigit() or int(key) < 0:
                raise ValueError(f"logit_bias keys must be token ids, got '{key}'")
            if not -100 <= value <= 100:
                raise ValueError(f"logit_bias values must be in [-100, 100], got {value}")
        return v

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatCompletionRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(default=None, ge=0, le=20)
    response_format: Optional[ResponseFormat] = None
    tools: Optional[list[Tool]] = None
    tool_choice: Union[Literal["none", "auto", "required"], NamedToolChoice, None] = None
    parallel_tool_calls: Optional[bool] = None
    chat_template_kwargs: Optional[dict[str, Any]] = None  # extension: {"enable_thinking": false}

    @model_validator(mode="after")
    def _checks(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        return self

    def token_limit(self) -> Optional[int]:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: Optional[int] = Field(default=16, ge=1)  # OpenAI's default for completions
    echo: bool = False
    logprobs: Optional[int] = Field(default=None, ge=0, le=5)
    suffix: Optional[str] = None
    best_of: Optional[int] = Field(default=None, ge=1)

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("prompt must not be an empty list")
        if isinstance(v, list) and any(isinstance(p, list) and not p for p in v):
            raise ValueError("token prompts must not be empty")
        return v

    def prompts(self) -> list:
        """Each prompt as a str or a list of token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(x, int) for x in p):
            return [list(p)]
        return list(p)


class EmbeddingRequest(_Body):
    model: str = Field(min_length=1)
    input: Union[str, list[str], list[int], list[list[int]]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = Field(default=None, ge=1)
    user: Optional[str] = None
    keep_alive: Union[str, float, None] = None  # extension (Ollama): "5m", seconds, 0, -1

    @field_validator("keep_alive")
    @classmethod
    def _keep_alive(cls, v):
        return _check_keep_alive(v)

    @field_validator("input")
    @classmethod
    def _non_empty(cls, v):
        if isinstance(v, str) and not v:
            raise ValueError("input must not be empty")
        if isinstance(v, list):
            if not v:
                raise ValueError("input must not be an empty list")
            if len(v) > 2048:
                raise ValueError("at most 2048 inputs per request")
            if any((isinstance(x, (str, list)) and not x) for x in v):
                raise ValueError("inputs must not be empty")
        return v

    def inputs(self) -> list:
        v = self.input
        if isinstance(v, str):
            return [v]
        if all(isinstance(x, int) for x in v):
            return [list(v)]
        return list(v)
