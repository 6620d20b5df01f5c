"""The simulated Coze bot's answers to the proxy's tool-call / JSON-mode protocol (cdp.sim.coze): they
follow it, break it once or always, and read back tool results; checked with the proxy's own parser."""

from __future__ import annotations

import json

from cdp.domain.tools import TextAnswer, ToolCallsAnswer, Violation, parse_request
from cdp.sim.coze import example_of, final_text, parse_directive, protocol_answer

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}}


def prompt_for(body: dict, user: str) -> tuple[str, object]:
    emu = parse_request(body)
    return json.dumps([{"role": "user", "content": user}]) + "\n\n" + emu.instructions(), emu


def test_follows_the_protocol_with_directive_arguments_or_a_schema_example():
    prompt, emu = prompt_for({"tools": [WEATHER]}, "hi [[sim:tool_args='{\"city\": \"Oslo\"}']]")
    answer = emu.parse(final_text(prompt))
    assert isinstance(answer, ToolCallsAnswer)
    assert json.loads(answer.calls[0]["function"]["arguments"]) == {"city": "Oslo"}
    prompt, emu = prompt_for({"tools": [WEATHER]}, "hi")
    answer = emu.parse(final_text(prompt))
    assert json.loads(answer.calls[0]["function"]["arguments"]) == {"city": "x"}  # the required properties


def test_breaks_once_then_repairs_and_always_breaks_when_told():
    prompt, emu = prompt_for({"tools": [WEATHER]}, "hi [[sim:tools_break=once]]")
    assert isinstance(emu.parse(final_text(prompt)), Violation)
    repaired = prompt + "\n" + emu.correction("no such tool")
    assert isinstance(emu.parse(final_text(repaired)), ToolCallsAnswer)
    prompt, emu = prompt_for({"tools": [WEATHER]}, "hi [[sim:tools_break=always break=args]]")
    assert isinstance(emu.parse(final_text(prompt + "\n" + emu.correction("x"))), Violation)


def test_json_mode_and_tool_results():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    prompt, emu = prompt_for({"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}},
                             "count")
    assert emu.parse(final_text(prompt)) == TextAnswer('{"n": 1}')
    history = [{"role": "user", "content": "q"},
               {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                     "function": {"name": "get_weather", "arguments": "{}"}}]},
               {"role": "tool", "tool_call_id": "c1", "content": "sunny, 20 C"}]
    emu = parse_request({"tools": [WEATHER]})
    prompt = json.dumps(emu.render_history(history, True)) + "\n\n" + emu.instructions()
    assert protocol_answer(prompt, parse_directive(prompt)) == "According to the tool: sunny, 20 C"


def test_no_protocol_no_answer_and_examples():
    assert protocol_answer("plain prompt", parse_directive("")) is None
    assert example_of({"enum": ["a", "b"]}) == "a" and example_of({"type": ["number", "null"]}) == 1.5
