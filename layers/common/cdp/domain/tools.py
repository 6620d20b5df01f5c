"""Tool calls and JSON mode, emulated through the prompt (pure: no I/O).

A Coze bot has no function-calling API: the proxy writes the tools (with their JSON Schemas) and a
strict answer protocol into the prompt, and reads the answer back:

- a tool call is exactly one fenced JSON block ``{"tool_calls":[{"name":..,"arguments":{..}}]}``
  (a bare JSON object is accepted too); its calls become OpenAI ``tool_calls`` (ids ``call_<random>``,
  arguments a JSON string checked against the tool's schema);
- anything else is prose (allowed only with ``tool_choice`` auto and no ``response_format``);
- JSON mode: the answer is one JSON object (a ```json fence is stripped), checked against the
  ``json_schema`` when there is one.

The history goes back the same way: an assistant message's ``tool_calls`` are rendered as the block
it would have answered, a ``tool`` message as "Result of tool call <id> (<name>):" and its content.
An answer that breaks the protocol is a :class:`Violation`; :meth:`Emulation.correction` is the
short message of the one repair round (cdp.app.structured).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CORRECTION_HEAD",
    "PROTOCOL_HEAD",
    "TOOL_RESULT_HEAD",
    "Emulation",
    "Gate",
    "TextAnswer",
    "Tool",
    "ToolCallsAnswer",
    "ToolsError",
    "Violation",
    "new_call_id",
    "parse_request",
    "strip_fence",
]

#: First line of the protocol appended to the prompt (the simulated bot looks for it).
PROTOCOL_HEAD = "=== ANSWER PROTOCOL (follow it exactly) ==="
#: First words of the repair round's message.
CORRECTION_HEAD = "Your previous answer broke the answer protocol"
#: How a `tool` message is rendered into the prompt: TOOL_RESULT_HEAD + " <id> (<name>):\n<content>".
TOOL_RESULT_HEAD = "Result of tool call"

MAX_TOOLS = 128  # OpenAI's limit
MAX_REASON = 300  # characters of a schema error quoted in a correction or an error (it may quote the value)
_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_FENCE_RE = re.compile(r"^```[a-zA-Z0-9_-]*[ \t]*\n?(.*?)\n?[ \t]*```$", re.S)
_LEADING_FENCE_RE = re.compile(r"^```[a-zA-Z0-9_-]*[ \t]*\n?(.*?)```", re.S)


class ToolsError(ValueError):
    """The request's tools / tool_choice / response_format are wrong (a 400 naming `param`)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict


@dataclass(frozen=True)
class ToolCallsAnswer:
    """The answer is a tool call: OpenAI `tool_calls` entries (id, type, function{name, arguments})."""

    calls: list[dict]


@dataclass(frozen=True)
class TextAnswer:
    """The answer is text: prose, or the JSON text of JSON mode (fence stripped)."""

    text: str


@dataclass(frozen=True)
class Violation:
    """The answer broke the protocol; `reason` says how (it goes into the correction and the error)."""

    reason: str


Answer = ToolCallsAnswer | TextAnswer | Violation


def new_call_id() -> str:
    return "call_" + secrets.token_urlsafe(18).replace("-", "a").replace("_", "b")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _check_schema(schema: Any, param: str, what: str) -> dict:
    # jsonschema is imported on first use: ~50 ms of every cold start otherwise (bench/cold_import.py)
    from jsonschema import exceptions as js_exceptions
    from jsonschema import validators as js_validators

    if not isinstance(schema, dict):
        raise ToolsError(f"Invalid '{param}': {what} must be a JSON Schema object.", param)
    try:
        js_validators.validator_for(schema).check_schema(schema)
    except js_exceptions.SchemaError as exc:
        raise ToolsError(f"Invalid schema for {what}: {exc.message}.", param, code="invalid_schema") from None
    return schema


def _schema_problem(schema: dict, value: Any) -> str | None:
    """None if `value` matches `schema`, else the best-matching error, with where it is."""
    from jsonschema import exceptions as js_exceptions
    from jsonschema import validators as js_validators

    validator = js_validators.validator_for(schema)(schema)
    error = js_exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    message = error.message if len(error.message) <= MAX_REASON else error.message[:MAX_REASON] + "…"
    return message + (f" (at {where.lstrip('.')})" if where else "")


# --------------------------------------------------------------------------------------------
# the request


def _tools_of(raw: Any) -> tuple[Tool, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ToolsError("Invalid type for 'tools': expected an array of tools.", "tools")
    if len(raw) > MAX_TOOLS:
        raise ToolsError(f"Invalid 'tools': array too long. Expected an array with maximum length {MAX_TOOLS}, "
                         f"but got an array with length {len(raw)} instead.", "tools")
    out: list[Tool] = []
    for i, t in enumerate(raw):
        p = f"tools[{i}]"
        if not isinstance(t, dict) or t.get("type", "function") != "function":
            raise ToolsError(f"Invalid '{p}': only tools of type 'function' are supported.", f"{p}.type")
        fn = t.get("function")
        if not isinstance(fn, dict):
            raise ToolsError(f"Missing required parameter: '{p}.function'.", f"{p}.function")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ToolsError(f"Invalid '{p}.function.name': expected a string of 1 to 64 letters, digits, "
                             "'_' or '-'.", f"{p}.function.name")
        if any(x.name == name for x in out):
            raise ToolsError(f"Invalid 'tools': the function name '{name}' is used twice.", f"{p}.function.name")
        desc = fn.get("description") or ""
        if not isinstance(desc, str):
            raise ToolsError(f"Invalid '{p}.function.description': expected a string.", f"{p}.function.description")
        params = fn.get("parameters", {"type": "object", "properties": {}})
        _check_schema(params, f"{p}.function.parameters", f"function '{name}'")
        out.append(Tool(name, desc, params))
    return tuple(out)


def _check_history(messages: Any) -> None:
    """Tool messages name the call they answer; assistant `tool_calls` are function calls with a name."""
    for i, m in enumerate(messages if isinstance(messages, list) else ()):
        if not isinstance(m, dict):
            continue
        if m.get("role") == "tool" and not isinstance(m.get("tool_call_id"), str):
            raise ToolsError(f"Missing parameter 'tool_call_id': messages with role 'tool' must have a "
                             f"'tool_call_id' (messages[{i}]).", f"messages.{i}.tool_call_id")
        calls = m.get("tool_calls") if m.get("role") == "assistant" else None
        if calls is None:
            continue
        if not isinstance(calls, list):
            raise ToolsError(f"Invalid type for 'messages[{i}].tool_calls': expected an array.",
                             f"messages.{i}.tool_calls")
        for k, c in enumerate(calls):
            fn = c.get("function") if isinstance(c, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(c.get("id"), str):
                raise ToolsError(f"Invalid 'messages[{i}].tool_calls[{k}]': expected an object with an 'id' and a "
                                 "'function' with a 'name'.", f"messages.{i}.tool_calls.{k}")


def parse_request(body: dict) -> Emulation:
    """The emulation a chat request asks for (its tools, tool_choice, parallel_tool_calls and
    response_format). Raises :class:`ToolsError` for values OpenAI would refuse, and for tool
    messages without the call they answer."""
    _check_history(body.get("messages"))
    tools = _tools_of(body.get("tools"))
    choice = body.get("tool_choice")
    forced: str | None = None
    if choice is None:
        mode = "auto"
    elif isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise ToolsError(f"Invalid value for 'tool_choice': '{choice}'. Expected 'none', 'auto', 'required' "
                             "or a named function.", "tool_choice")
        mode = choice
    elif isinstance(choice, dict) and choice.get("type") == "function" \
            and isinstance(choice.get("function"), dict) and isinstance(choice["function"].get("name"), str):
        mode, forced = "named", choice["function"]["name"]
    else:
        raise ToolsError("Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or "
                         "{\"type\": \"function\", \"function\": {\"name\": ...}}.", "tool_choice")
    if choice is not None and not tools:
        raise ToolsError("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                         "specified.", "tool_choice")
    if forced is not None and all(t.name != forced for t in tools):
        raise ToolsError(f"Invalid value for 'tool_choice': tool_choice references '{forced}', which is not in "
                         "'tools'.", "tool_choice")
    parallel = body.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        raise ToolsError("Invalid type for 'parallel_tool_calls': expected a boolean.", "parallel_tool_calls")

    json_mode, schema, schema_name = False, None, None
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            raise ToolsError("Invalid value for 'response_format.type': expected 'text', 'json_object' or "
                             "'json_schema'.", "response_format.type")
        if kind == "json_object":
            json_mode = True
        elif kind == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict):
                raise ToolsError("Missing required parameter: 'response_format.json_schema'.",
                                 "response_format.json_schema")
            name = spec.get("name")
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise ToolsError("Invalid 'response_format.json_schema.name': expected a string of 1 to 64 "
                                 "letters, digits, '_' or '-'.", "response_format.json_schema.name")
            json_mode, schema_name = True, name
            if spec.get("schema") is not None:
                schema = _check_schema(spec["schema"], "response_format.json_schema.schema", f"'{name}'")
    offered = () if mode == "none" else tools
    return Emulation(tools=offered, mode=mode, forced=forced, parallel=parallel, json_mode=json_mode,
                     json_schema=schema, schema_name=schema_name)


# --------------------------------------------------------------------------------------------
# answers


def strip_fence(text: str) -> str:
    """`text` without surrounding whitespace and one surrounding ``` fence (```json ... ```)."""
    t = text.strip()
    m = _FENCE_RE.match(t)
    return m.group(1).strip() if m else t


def _leading_json(text: str) -> tuple[bool, Any, str]:
    """(ok, value, its source) of the JSON value the answer starts with: inside a leading ``` fence,
    or bare. Text after it (a model's afterthought) is ignored; the gate held the answer back from
    its first character, so nothing of it was shown."""
    t = text.strip()
    if t.startswith("```"):
        m = _LEADING_FENCE_RE.match(t)
        t = m.group(1).strip() if m else t.split("\n", 1)[-1] if "\n" in t else ""
    try:
        value, end = json.JSONDecoder().raw_decode(t)
    except ValueError:
        return False, None, ""
    return True, value, t[:end]


def _calls_of(obj: Any) -> list | None:
    """The calls of a tool-call object (`{"tool_calls": [...]}` or one `{"name", "arguments"}`), else None."""
    if not isinstance(obj, dict):
        return None
    if "tool_calls" in obj:
        calls = obj["tool_calls"]
        return calls if isinstance(calls, list) else [calls]
    if isinstance(obj.get("name"), str) and "arguments" in obj and len(obj) <= 3:
        return [obj]
    return None


@dataclass(frozen=True)
class Emulation:
    """What the request asked for; `active` when the answer protocol applies."""

    tools: tuple[Tool, ...] = ()
    mode: str = "auto"  # "none" | "auto" | "required" | "named"
    forced: str | None = None
    parallel: bool = True
    json_mode: bool = False
    json_schema: dict | None = None
    schema_name: str | None = None
    _by_name: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({t.name: t for t in self.tools})

    @property
    def active(self) -> bool:
        return bool(self.tools) or self.json_mode

    @property
    def prose_allowed(self) -> bool:
        return not self.json_mode and (not self.tools or self.mode == "auto")

    # -- the prompt ------------------------------------------------------------------------
    def instructions(self) -> str:
        """The protocol appended to the prompt ("" when inactive)."""
        if not self.active:
            return ""
        lines = [PROTOCOL_HEAD]
        if self.tools:
            spec = [{"name": t.name, "description": t.description, "parameters": t.parameters} for t in self.tools]
            lines += ["You can call these tools (\"parameters\" is the JSON Schema of a tool's arguments):",
                      "TOOLS: " + _dumps(spec),
                      "To call tools, answer with ONLY this fenced JSON block, nothing before or after it:",
                      "```json",
                      '{"tool_calls":[{"name":"<tool name>","arguments":{<arguments matching its parameters>}}]}',
                      "```",
                      ("List several calls in \"tool_calls\" to call tools in parallel." if self.parallel
                       else "Call exactly one tool at a time."),
                      "Tool results come back to you as \"tool\" messages."]
            if self.mode == "required":
                lines.append("REQUIRED: you must call at least one tool now; answer only with the JSON block.")
            elif self.mode == "named":
                lines.append(f"REQUIRED CALL: {self.forced} — you must call the tool \"{self.forced}\" now; "
                             "answer only with the JSON block.")
        if self.json_mode:
            how = ("Otherwise, give your final answer as" if self.tools and self.mode == "auto"
                   else "Answer with")
            lines.append(f"{how} ONLY one valid JSON object (no other text; a ```json fence is allowed).")
            if self.json_schema is not None:
                lines.append("The JSON object must match this JSON Schema:")
                lines.append("JSON SCHEMA: " + _dumps(self.json_schema))
        elif self.tools and self.mode == "auto":
            lines.append("Otherwise (no tool is needed), answer the user in plain text, without any JSON block.")
        return "\n".join(lines)

    def correction(self, reason: str) -> str:
        """The repair round's message: what was wrong, then the protocol again."""
        return f"{CORRECTION_HEAD}: {reason}. Answer the same request again.\n{self.instructions()}"

    def render_history(self, messages: list[dict], all_dialog_record: bool) -> list[dict]:
        """`messages` with assistant `tool_calls` and `tool` messages rendered as text. With
        `all_dialog_record` False (only the last user message is posted), what follows the last user
        message (calls and their results) is appended to it, so an agent's next step sees them."""
        names: dict[str, str] = {}
        out: list[dict] = []
        rendered: set[int] = set()  # indexes in `out` of rendered calls and results
        for m in messages:
            if not isinstance(m, dict):
                out.append(m)
                continue
            role = m.get("role")
            if role == "assistant" and isinstance(m.get("tool_calls"), list):
                calls = []
                for c in m["tool_calls"]:
                    fn = c.get("function") if isinstance(c, dict) else None
                    if not isinstance(fn, dict):
                        continue
                    args = fn.get("arguments")
                    if isinstance(args, str):
                        try:
                            args = json.loads(args)
                        except ValueError:
                            pass
                    names[str(c.get("id"))] = str(fn.get("name"))
                    calls.append({"name": fn.get("name"), "arguments": args if args is not None else {}})
                block = "```json\n" + _dumps({"tool_calls": calls}) + "\n```"
                text = m.get("content")
                content = f"{text}\n{block}" if isinstance(text, str) and text.strip() else block
                rendered.add(len(out))
                out.append({**{k: v for k, v in m.items() if k != "tool_calls"}, "content": content})
            elif role in ("tool", "function"):
                call_id = str(m.get("tool_call_id") or "")
                name = names.get(call_id) or m.get("name") or "tool"
                content = m.get("content")
                text = content if isinstance(content, str) else _flatten(content)
                head = f"{TOOL_RESULT_HEAD} {call_id} ({name}):" if call_id else f"{TOOL_RESULT_HEAD} ({name}):"
                rendered.add(len(out))
                out.append({"role": "tool", "content": f"{head}\n{text}"})
            else:
                out.append(m)
        if all_dialog_record:
            return out
        last_user = max((i for i, m in enumerate(out) if isinstance(m, dict) and m.get("role") == "user"),
                        default=None)
        if last_user is None or not any(i > last_user for i in rendered):
            return out  # nothing of an agent loop after it: the last user message alone, as without tools
        tail = "\n\n".join(f"[{m.get('role')}]\n{_flatten(m.get('content'))}" for m in out[last_user + 1:]
                           if isinstance(m, dict))
        user = out[last_user]
        content = user.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        merged = {**user, "content": [*parts, {"type": "text", "text": tail}]}
        return [*out[:last_user], merged]

    # -- the answer ------------------------------------------------------------------------
    def parse(self, text: str, new_id: Callable[[], str] = new_call_id) -> Answer:
        """The answer read by the protocol: tool calls, text (prose or JSON), or a violation."""
        ok, obj, source = _leading_json(text)
        if self.tools:
            calls = _calls_of(obj) if ok else None
            if calls is not None:
                return self._tool_calls(calls, new_id)
            if self.mode == "required":
                return Violation("a tool call was required, but the answer is not the JSON block of one")
            if self.mode == "named":
                return Violation(f"a call of the tool \"{self.forced}\" was required, but the answer is not the "
                                 "JSON block of one")
        if self.json_mode:
            if not ok:
                return Violation("the answer is not valid JSON")
            if not isinstance(obj, dict):
                return Violation("the answer must be a JSON object")
            if self.json_schema is not None:
                problem = _schema_problem(self.json_schema, obj)
                if problem is not None:
                    return Violation(f"the JSON does not match the schema: {problem}")
            return TextAnswer(source)
        return TextAnswer(text)

    def _tool_calls(self, calls: list, new_id: Callable[[], str]) -> Answer:
        if not calls:
            return Violation("\"tool_calls\" is empty")
        if not self.parallel and len(calls) > 1:
            return Violation("only one tool call is allowed at a time")
        out = []
        for call in calls:
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                return Violation("each tool call must be an object with a \"name\" and \"arguments\"")
            name = call["name"]
            tool = self._by_name.get(name)
            if tool is None:
                known = ", ".join(t.name for t in self.tools)
                return Violation(f"there is no tool \"{name}\" (the tools are: {known})")
            if self.mode == "named" and name != self.forced:
                return Violation(f"the tool \"{self.forced}\" had to be called, not \"{name}\"")
            args = call.get("arguments", {})
            if isinstance(args, str):
                try:
                    args = json.loads(args) if args.strip() else {}
                except ValueError:
                    return Violation(f"the arguments of \"{name}\" are not valid JSON")
            if not isinstance(args, dict):
                return Violation(f"the arguments of \"{name}\" must be a JSON object")
            problem = _schema_problem(tool.parameters, args)
            if problem is not None:
                return Violation(f"the arguments of \"{name}\" do not match its parameters: {problem}")
            out.append({"id": new_id(), "type": "function",
                        "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}})
        return ToolCallsAnswer(out)


def _flatten(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content
                         if not isinstance(p, dict) or isinstance(p.get("text"), str))
    return str(content)


class Gate:
    """Decides, as a streamed answer grows, whether it may be shown as prose yet.

    Prose is only possible when the emulation allows it; then the answer is prose as soon as its
    first non-whitespace character cannot start a tool-call block (a ``` fence or a JSON object).
    Until then (and for good when prose is not allowed) the text is held back."""

    def __init__(self, emulation: Emulation) -> None:
        self.emulation = emulation
        self.prose = False

    def feed(self, text: str) -> bool:
        """True once the answer is known to be prose (it stays so)."""
        if self.prose or not self.emulation.prose_allowed:
            return self.prose
        start = text.lstrip()[:3]
        if not start:
            return False
        if start[0] == "{" or "```".startswith(start):  # a fence, or part of one
            return False
        self.prose = True
        return True
