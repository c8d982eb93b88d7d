"""The Go text/template subset Ollama's chat templates use, on templates in the shape of Ollama's
library ones (ChatML with .Prompt/.Response; the .Messages form with tools and $last)."""

from __future__ import annotations

import pytest

from ominix.engine.gotemplate import Template, TemplateError, ollama_data

QWEN_STYLE = """{{- if .Messages }}
{{- if or .System .Tools }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{- end }}
{{- if .Tools }}

<tools>
{{- range .Tools }}
{"type": "function", "function": {{ .Function }}}
{{- end }}
</tools>
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}
{{- else }}
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ end }}{{ .Response }}{{ if .Response }}<|im_end|>{{ end }}"""

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "f", "arguments": '{"a": 1}'}}]},
            {"role": "tool", "content": "42"}]  # fmt: skip
TOOLS = [{"type": "function", "function": {"name": "f", "description": "d",
                                           "parameters": {"type": "object"}}}]  # fmt: skip


def test_messages_template_with_tools():
    text = Template(QWEN_STYLE).render(ollama_data(MESSAGES, TOOLS))
    assert text == (
        "<|im_start|>system\nBe brief.\n\n<tools>\n"
        '{"type": "function", "function": {"name":"f","description":"d",'
        '"parameters":{"type":"object"}}}\n</tools><|im_end|>\n'
        "<|im_start|>user\nHi<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "f", "arguments": {"a":1}}\n'
        "</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n")


def test_prompt_response_template_stops_at_the_response():
    chatml = ("{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
              "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
              "<|im_start|>assistant\n{{ .Response }}<|im_end|>\n")  # fmt: skip
    text = Template(chatml).render(ollama_data([{"role": "user", "content": "Hi"}]))
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_language_pieces():
    data = {"Xs": [1, 2, 3], "S": "a", "N": 0, "M": {"k": "v"}}
    cases = {
        "{{ range $i, $x := .Xs }}{{ if eq $i 1 }}{{ continue }}{{ end }}{{ $x }}{{ end }}": "13",
        "{{ range .Xs }}{{ if gt . 1 }}{{ break }}{{ end }}{{ . }}{{ end }}": "1",
        "{{ range .Missing }}x{{ else }}none{{ end }}": "none",
        "{{ with .M }}{{ .k }}{{ end }}{{ with .N }}no{{ else }}zero{{ end }}": "vzero",
        "{{ $a := 1 }}{{ if true }}{{ $a = 2 }}{{ end }}{{ $a }}": "2",
        '{{ printf "%s-%d" .S 7 }} {{ .S | len }} {{ index .Xs 2 }} {{ json .M }}': 'a-7 1 3 {"k":"v"}',
        "{{- /* comment */ -}} x {{- .S -}} y": "xay",
        "{{ if and .S (not .N) }}yes{{ end }}{{ if or .N .Missing }}no{{ end }}": "yes",
    }
    for source, expected in cases.items():
        assert Template(source).render(data) == expected, source


def test_unsupported_constructs_are_reported():
    for source in ('{{ template "x" }}', "{{ if .A }}open", "{{ unknownfn .A }}"):
        with pytest.raises(TemplateError):
            Template(source).render({"A": 1})
