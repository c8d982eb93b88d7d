"""A small interpreter for the Go text/template subset Ollama's chat templates use.

Ollama's registry ships each model's prompt format as a Go template over
{.System, .Prompt, .Response, .Messages [{.Role, .Content, .Thinking, .ToolCalls}], .Tools, .Think}.
Supported: text with `{{- -}}` trimming and comments; `if / else if / else`, `range` (with
`$i, $x :=` and `else`), `with`, `break`, `continue`; variables (`:=`, `=`, `$`); field chains;
string, number and boolean literals; parenthesized calls; pipes into one function; and the
functions eq ne lt le gt ge and or not len index slice print printf json. Anything else raises
TemplateError, so a template we cannot render is reported instead of rendered wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field


class TemplateError(ValueError):
    pass


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r"""\s*(?:(?P<str>"(?:\\.|[^"\\])*"|`[^`]*`)|(?P<num>-?\d+(?:\.\d+)?)|"""
                    r"""(?P<var>\$[\w]*(?:\.\w+)*)|(?P<field>(?:\.\w+)+|\.)|(?P<op>:=|=|\(|\)|,|\|)|"""
                    r"""(?P<ident>[A-Za-z_]\w*(?:\.\w+)*))""")  # fmt: skip


@dataclass
class _Node:
    kind: str  # text, action, if, range, with, assign, break, continue
    value: object = None
    branches: list = field(default_factory=list)  # if: [(pipeline, body)]
    body: list = field(default_factory=list)
    otherwise: list = field(default_factory=list)
    names: list = field(default_factory=list)  # range/assign variables
    declare: bool = False


def _tokens(src: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    src = src.rstrip()
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"cannot parse '{src[pos:pos + 20]}' in a template action")
        out.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
    return out


def _split(template: str) -> list[tuple[str, str]]:
    """[("text", s) | ("action", s)] with Go's trim markers applied."""
    parts, pos, trim_next = [], 0, False
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        parts.append(("text", text))
        body = m.group(2).strip()
        if not (body.startswith("/*") and body.endswith("*/")):
            parts.append(("action", body))
        trim_next, pos = bool(m.group(3)), m.end()
    tail = template[pos:]
    parts.append(("text", tail.lstrip() if trim_next else tail))
    return parts


class _Parser:
    def __init__(self, template: str):
        self.parts, self.i = _split(template), 0

    def parse(self, stops=()) -> tuple[list[_Node], str | None]:
        nodes = []
        while self.i < len(self.parts):
            kind, text = self.parts[self.i]
            self.i += 1
            if kind == "text":
                if text:
                    nodes.append(_Node("text", text))
                continue
            word = text.split(None, 1)[0] if text else ""
            if word in stops or (word == "else" and "else" in stops):
                return nodes, text
            nodes.append(self.control(word, text))
        if stops:
            raise TemplateError("a template block is not closed with {{ end }}")
        return nodes, None

    def control(self, word: str, text: str) -> _Node:
        rest = text[len(word):].strip()
        if word in ("if", "with"):
            node = _Node(word)
            cond = rest
            while True:
                body, stop = self.parse(("end", "else"))
                node.branches.append((_tokens(cond), body))
                if stop == "end":
                    return node
                rest = stop[4:].strip()
                if rest.startswith("if ") and word == "if":
                    cond = rest[3:]
                    continue
                node.otherwise, stop = self.parse(("end",))
                return node
        if word == "range":
            node = _Node("range")
            if ":=" in rest:
                names, rest = rest.split(":=", 1)
                node.names = [n.strip() for n in names.split(",")]
            node.value = _tokens(rest)
            node.body, stop = self.parse(("end", "else"))
            if stop != "end":
                node.otherwise, _ = self.parse(("end",))
            return node
        if word in ("break", "continue"):
            return _Node(word)
        if word in ("define", "template", "block"):
            raise TemplateError(f"{{{{ {word} }}}} is not supported")
        m = re.match(r"^(\$\w*)\s*(:=|=)(.*)$", text, re.S)
        if m:
            return _Node("assign", _tokens(m.group(3)), names=[m.group(1)], declare=m.group(2) == ":=")
        return _Node("action", _tokens(text))


class _Break(Exception):
    pass


class _Stop(Exception):
    """Rendering reached `{{ .Response }}` with no response: the prompt ends there (as Ollama
    cuts its templates at the response for the turn to be generated)."""


class _Continue(Exception):
    pass


def _truthy(v) -> bool:
    return not (v is None or v is False or v == 0 and not isinstance(v, str) or
                (hasattr(v, "__len__") and len(v) == 0))  # fmt: skip


def _get(value, name: str):
    """Go field names over our dicts: .Role reads "Role", else "role"; .ToolCalls "tool_calls"."""
    if isinstance(value, dict):
        if name in value:
            return value[name]
        return value.get(re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower())
    return getattr(value, name, None)


def _printf(fmt: str, *args) -> str:
    """Go's printf for %v %s %d %q (quoted string) and %%."""
    values = iter(args)

    def one(m):
        if m.group() == "%%":
            return "%"
        value = next(values, None)
        return json.dumps(value, ensure_ascii=False) if m.group() == "%q" else _str(value)

    return re.sub(r"%[vsdq%]", one, fmt)


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _slice(seq, start=None, end=None):
    """Go's `slice x i j` is x[i:j]; `slice x i` is x[i:]."""
    return seq[start:end]


FUNCTIONS = {
    "eq": lambda a, *bs: any(a == b for b in bs), "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b, "le": lambda a, b: a <= b, "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b, "not": lambda a: not _truthy(a), "len": lambda a: len(a or ()),
    "index": lambda a, *keys: _index(a, keys), "slice": _slice, "json": _json,
    "print": lambda *a: "".join(_str(x) for x in a), "printf": _printf,
}  # fmt: skip


def _index(value, keys):
    for key in keys:
        value = value[key] if value is not None else None
    return value


def _str(value) -> str:
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return _json(value)
    return str(value)


class Template:
    def __init__(self, source: str):
        self.source = source
        self.nodes, _ = _Parser(source).parse()

    def render(self, data: dict) -> str:
        out: list[str] = []
        try:
            self._run(self.nodes, data, [{"$": data}], out)
        except _Stop:
            pass
        return "".join(out)

    def _run(self, nodes, dot, scopes, out):
        for node in nodes:
            if node.kind == "text":
                out.append(node.value)
            elif node.kind == "action":
                if node.value == [("field", ".Response")] and not _get(scopes[0]["$"], "Response"):
                    raise _Stop()
                out.append(_str(self._pipeline(node.value, dot, scopes)))
            elif node.kind == "assign":
                value = self._pipeline(node.value, dot, scopes)
                name = node.names[0]
                target = scopes[-1] if node.declare else next(
                    (s for s in reversed(scopes) if name in s), scopes[-1])
                target[name] = value
            elif node.kind == "if":
                for cond, body in node.branches:
                    if _truthy(self._pipeline(cond, dot, scopes)):
                        self._run(body, dot, scopes + [{}], out)
                        break
                else:
                    self._run(node.otherwise, dot, scopes + [{}], out)
            elif node.kind == "with":
                value = self._pipeline(node.branches[0][0], dot, scopes)
                if _truthy(value):
                    self._run(node.branches[0][1], value, scopes + [{}], out)
                else:
                    self._run(node.otherwise, dot, scopes + [{}], out)
            elif node.kind == "range":
                self._range(node, dot, scopes, out)
            elif node.kind == "break":
                raise _Break()
            elif node.kind == "continue":
                raise _Continue()

    def _range(self, node, dot, scopes, out):
        seq = self._pipeline(node.value, dot, scopes)
        items = list(seq.items()) if isinstance(seq, dict) else list(enumerate(seq or []))
        if not items:
            self._run(node.otherwise, dot, scopes + [{}], out)
            return
        for key, item in items:
            scope = {}
            if len(node.names) == 1:
                scope[node.names[0]] = item
            elif len(node.names) == 2:
                scope[node.names[0]], scope[node.names[1]] = key, item
            try:
                self._run(node.body, item, scopes + [scope], out)
            except _Continue:
                continue
            except _Break:
                break

    def _pipeline(self, tokens, dot, scopes):
        stages, current = [], []
        for tok in tokens:
            if tok == ("op", "|"):
                stages.append(current)
                current = []
            else:
                current.append(tok)
        stages.append(current)
        value, piped = None, False
        for stage in stages:
            value = self._command(stage, dot, scopes, (value,) if piped else ())
            piped = True
        return value

    def _command(self, tokens, dot, scopes, extra):
        args, i = [], 0
        while i < len(tokens):
            kind, text = tokens[i]
            if (kind, text) == ("op", "("):
                depth, j = 1, i + 1
                while depth:
                    if j >= len(tokens):
                        raise TemplateError("unbalanced parentheses in a template action")
                    depth += {"(": 1, ")": -1}.get(tokens[j][1] if tokens[j][0] == "op" else "", 0)
                    j += 1
                args.append(("value", self._pipeline(tokens[i + 1:j - 1], dot, scopes)))
                i = j
                continue
            args.append((kind, text))
            i += 1
        if not args:
            raise TemplateError("empty template action")
        head_kind, head = args[0]
        if head_kind == "ident" and head in FUNCTIONS:
            values = [self._operand(a, dot, scopes) for a in args[1:]] + list(extra)
            return FUNCTIONS[head](*values)
        if head_kind == "ident" and head in ("and", "or"):  # Go: the first deciding argument
            values = [self._operand(a, dot, scopes) for a in args[1:]] + list(extra)
            for v in values:
                if (head == "and") != _truthy(v):
                    return v
            return values[-1] if values else None
        if len(args) > 1 or extra:
            raise TemplateError(f"'{head}' is not a function this template runtime knows")
        return self._operand(args[0], dot, scopes)

    def _operand(self, arg, dot, scopes):
        kind, text = arg
        if kind == "value":
            return text
        if kind == "str":
            return text[1:-1] if text.startswith("`") else json.loads(text)
        if kind == "num":
            return float(text) if "." in text else int(text)
        if kind == "field":
            value = dot
            for name in text.split(".")[1:] if text != "." else []:
                value = _get(value, name)
            return value
        if kind == "var":
            name, *fields = text.split(".")
            for scope in reversed(scopes):
                if name in scope:
                    value = scope[name]
                    break
            else:
                raise TemplateError(f"undefined variable {name}")
            for f in fields:
                value = _get(value, f)
            return value
        if kind == "ident":
            if text in ("true", "false"):
                return text == "true"
            if text == "nil":
                return None
            if text in FUNCTIONS:
                return FUNCTIONS[text]()
        raise TemplateError(f"'{text}' is not supported in a template action")


def ollama_data(messages: list[dict], tools: list | None = None, think: bool | None = None) -> dict:
    """Our chat messages (OpenAI-style dicts) as the data Ollama hands its templates; fields are
    read with Go's names (see _get), tool-call arguments as objects, as Ollama has them."""
    system = "\n\n".join(m.get("content") or "" for m in messages if m.get("role") == "system")
    go_messages = []
    for m in messages:
        calls = [{**c, "function": {**c.get("function", {}),
                                    "arguments": _arguments(c.get("function", {}).get("arguments"))}}
                 for c in m.get("tool_calls") or []]  # fmt: skip
        go_messages.append({**m, "content": m.get("content") or "", "tool_calls": calls,
                            "thinking": m.get("reasoning_content") or m.get("thinking") or "",
                            "tool_name": m.get("tool_name") or m.get("name")})  # fmt: skip
    last_user = next((m["content"] for m in reversed(go_messages) if m["role"] == "user"), "")
    return {"System": system, "Prompt": last_user, "Response": "", "Messages": go_messages,
            "Tools": list(tools or []), "Think": bool(think), "IsThinkSet": think is not None}


def _arguments(value):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
