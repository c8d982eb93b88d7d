"""A model pulled from Ollama's registry (hub/ollama.py's folder: model.gguf + ollama.json) as
(model, tokenizer): the GGUF loads as any GGUF file; Ollama's Go template becomes the chat
template (rendered by engine/gotemplate.py, as Ollama renders it), its params the sampling
defaults and stop sequences, its system layer the default system prompt."""

from __future__ import annotations

import json
from pathlib import Path

from ominix.engine.gotemplate import Template, TemplateError, ollama_data
from ominix.engine.llm.tokenizer import ChatTemplateError, Tokenizer

# Ollama params -> generation_config.json keys the engine reads for defaults
PARAMS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
          "repeat_penalty": "repetition_penalty", "num_ctx": "num_ctx", "seed": "seed",
          "num_predict": "max_new_tokens"}  # fmt: skip


class OllamaTemplateTokenizer(Tokenizer):
    """A Tokenizer whose chat template is an Ollama Go template."""

    go_template: Template

    @property
    def chat_template(self) -> str | None:
        return self.go_template.source

    def apply_chat_template(self, messages, *, tools=None, add_generation_prompt=True,
                            tokenize=False, chat_template=None, **template_kwargs):  # fmt: skip
        if not messages:
            raise ChatTemplateError("cannot apply the chat template to an empty conversation")
        data = ollama_data(list(messages), tools, template_kwargs.get("enable_thinking"))
        try:
            text = self.go_template.render(data)
        except (TemplateError, TypeError, KeyError, IndexError) as e:
            raise ChatTemplateError(f"the Ollama template failed: {e}") from e
        return self.encode(text) if tokenize else text


def read_info(folder: Path) -> dict:
    return json.loads((Path(folder) / "ollama.json").read_text())


def apply_ollama_info(tokenizer: Tokenizer, info: dict) -> Tokenizer:
    """Template, params and system from ollama.json onto a GGUF's tokenizer."""
    params = info.get("params") or {}
    tokenizer.generation_config.update(
        {ours: params[theirs] for theirs, ours in PARAMS.items() if theirs in params})
    stops = params.get("stop") or []
    stops = [stops] if isinstance(stops, str) else list(stops)
    tokenizer.generation_config["stop"] = stops
    for stop in stops:  # a stop that is one token ends generation like an end-of-turn token
        if (token := tokenizer.token_to_id(stop)) is not None:
            tokenizer.eos_token_ids.add(token)
    tokenizer.default_system = info.get("system")
    source = info.get("template")
    if not source:
        return tokenizer
    try:
        template = Template(source)
    except TemplateError:
        return tokenizer  # a construct we cannot render: the GGUF's own Jinja template stays
    wrapped = OllamaTemplateTokenizer.__new__(OllamaTemplateTokenizer)
    wrapped.__dict__.update(tokenizer.__dict__)
    wrapped.go_template = template
    return wrapped


def load_ollama_folder(folder: str | Path, *, dtype=None):
    from ominix.engine.gguf import load_gguf

    folder = Path(folder)
    model, tokenizer = load_gguf(folder / "model.gguf", dtype=dtype)
    info = read_info(folder)
    model.ollama_info = info
    return model, apply_ollama_info(tokenizer, info)
