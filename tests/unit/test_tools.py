"""The pure parts of tool-call / JSON-mode emulation (cdp.domain.tools): request parsing, the prompt's
protocol, the history rendered back, the answer read by the protocol, and the stream gate."""

from __future__ import annotations

import json

import pytest
from cdp.domain.prompt import build_prompt
from cdp.domain.tools import (
    PROTOCOL_HEAD,
    TOOL_RESULT_HEAD,
    Gate,
    TextAnswer,
    ToolCallsAnswer,
    ToolsError,
    Violation,
    new_call_id,
    parse_request,
    strip_fence,
)

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
                   "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def emu(**body):
    return parse_request(body)


def ids():
    n = iter(range(100))
    return lambda: f"call_{next(n)}"


# -- the request --------------------------------------------------------------------------------

def test_no_tools_no_format_is_inactive():
    e = emu()
    assert not e.active and e.prose_allowed and e.instructions() == ""


@pytest.mark.parametrize("body, param", [
    ({"tools": {"a": 1}}, "tools"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
    ({"tools": [{"type": "function"}]}, "tools[0].function"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0].function.name"),
    ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 7}}}]},
     "tools[0].function.parameters"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
     "response_format.json_schema.name"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "nope"}}}},
     "response_format.json_schema.schema"),
    ({"tools": [WEATHER] * 129}, "tools"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}]}, "messages.1.tool_call_id"),
    ({"messages": [{"role": "assistant", "tool_calls": {"id": "c"}}]}, "messages.0.tool_calls"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {}}]}]}, "messages.0.tool_calls.0"),
])
def test_requests_openai_refuses_are_refused_naming_the_parameter(body, param):
    with pytest.raises(ToolsError) as info:
        parse_request(body)
    assert info.value.param == param and info.value.message


def test_tool_choice_none_offers_no_tool():
    e = emu(tools=[WEATHER], tool_choice="none")
    assert not e.active and e.instructions() == ""


def test_response_format_text_is_plain():
    assert not emu(response_format={"type": "text"}).active


# -- the prompt ---------------------------------------------------------------------------------

def test_instructions_carry_schemas_and_the_protocol():
    text = emu(tools=[WEATHER, TIME]).instructions()
    assert text.startswith(PROTOCOL_HEAD)
    line = next(x for x in text.splitlines() if x.startswith("TOOLS: "))
    tools = json.loads(line.removeprefix("TOOLS: "))
    assert [t["name"] for t in tools] == ["get_weather", "get_time"]
    assert tools[0]["parameters"]["required"] == ["city"]
    assert '{"tool_calls":[{"name":' in text and "plain text" in text


def test_instructions_for_required_named_and_json_schema():
    assert "REQUIRED:" in emu(tools=[WEATHER], tool_choice="required").instructions()
    named = emu(tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert "REQUIRED CALL: get_time" in named.instructions()
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    text = emu(response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}).instructions()
    assert "valid JSON object" in text and "JSON SCHEMA: " + json.dumps(schema, separators=(",", ":")) in text
    assert "Call exactly one tool" in emu(tools=[WEATHER], parallel_tool_calls=False).instructions()


AGENT_HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "22 C and sunny"},
]


def test_history_renders_calls_and_results_into_the_json_prompt():
    rendered = emu(tools=[WEATHER]).render_history(AGENT_HISTORY, True)
    records = json.loads(build_prompt(rendered, True))
    assert records[2] == {"role": "assistant",
                          "content": '```json\n{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}}]}\n```'}
    assert records[3] == {"role": "tool", "content": f"{TOOL_RESULT_HEAD} call_1 (get_weather):\n22 C and sunny"}


def test_history_after_the_last_user_message_joins_it_when_only_that_is_posted():
    rendered = emu(tools=[WEATHER]).render_history(AGENT_HISTORY, False)
    prompt = build_prompt(rendered, False)
    assert prompt.startswith("Weather in Paris?\n[assistant]\n```json")
    assert prompt.endswith(f"[tool]\n{TOOL_RESULT_HEAD} call_1 (get_weather):\n22 C and sunny")


def test_history_without_tool_messages_is_unchanged():
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert emu().render_history(messages, False) == messages


# -- the answer ---------------------------------------------------------------------------------

def test_fenced_tool_call_becomes_openai_tool_calls():
    answer = emu(tools=[WEATHER]).parse(
        '```json\n{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}}]}\n```', ids())
    assert answer == ToolCallsAnswer([{"id": "call_0", "type": "function",
                                       "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}])


def test_bare_object_string_arguments_and_single_call_forms_are_read():
    e = emu(tools=[WEATHER, TIME])
    a = e.parse('{"tool_calls":[{"name":"get_weather","arguments":"{\\"city\\":\\"Oslo\\"}"},'
                '{"name":"get_time","arguments":{}}]}', ids())
    assert isinstance(a, ToolCallsAnswer) and [c["function"]["name"] for c in a.calls] == ["get_weather", "get_time"]
    assert json.loads(a.calls[0]["function"]["arguments"]) == {"city": "Oslo"}
    single = e.parse('{"name": "get_time", "arguments": {}}', ids())
    assert isinstance(single, ToolCallsAnswer)


def test_prose_is_text_under_auto():
    assert emu(tools=[WEATHER]).parse("It is sunny.") == TextAnswer("It is sunny.")


@pytest.mark.parametrize("body, answer, words", [
    ({"tools": [WEATHER], "tool_choice": "required"}, "It is sunny.", "tool call was required"),
    ({"tools": [WEATHER]}, '{"tool_calls":[{"name":"get_wether","arguments":{}}]}', 'no tool "get_wether"'),
    ({"tools": [WEATHER]}, '{"tool_calls":[{"name":"get_weather","arguments":{}}]}', "'city' is a required"),
    ({"tools": [WEATHER]}, '{"tool_calls":[{"name":"get_weather","arguments":{"city":"P","unit":"K"}}]}',
     "at unit"),
    ({"tools": [WEATHER]}, '{"tool_calls":[{"name":"get_weather","arguments":"{oops"}]}', "not valid JSON"),
    ({"tools": [WEATHER]}, '{"tool_calls":[]}', "empty"),
    ({"tools": [WEATHER, TIME], "tool_choice": {"type": "function", "function": {"name": "get_time"}}},
     '{"tool_calls":[{"name":"get_weather","arguments":{"city":"P"}}]}', '"get_time" had to be called'),
    ({"tools": [WEATHER, TIME], "parallel_tool_calls": False},
     '{"tool_calls":[{"name":"get_time","arguments":{}},{"name":"get_time","arguments":{}}]}', "only one"),
    ({"response_format": {"type": "json_object"}}, "Sure, here it is", "not valid JSON"),
    ({"response_format": {"type": "json_object"}}, "[1, 2]", "JSON object"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {
        "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}}, '{"n": "two"}',
     "not of type 'integer'"),
])
def test_broken_answers_are_violations_that_say_why(body, answer, words):
    got = parse_request(body).parse(answer, ids())
    assert isinstance(got, Violation) and words in got.reason


def test_json_mode_strips_the_fence_and_checks_the_schema():
    e = emu(response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": {
        "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}})
    assert e.parse('```json\n{"n": 2}\n```') == TextAnswer('{"n": 2}')
    assert emu(response_format={"type": "json_object"}).parse('  {"a": [1]} ') == TextAnswer('{"a": [1]}')


def test_tools_and_json_mode_answer_either_way():
    e = emu(tools=[WEATHER], response_format={"type": "json_object"})
    assert isinstance(e.parse('{"tool_calls":[{"name":"get_weather","arguments":{"city":"P"}}]}'), ToolCallsAnswer)
    assert e.parse('{"temp": 22}') == TextAnswer('{"temp": 22}')
    assert isinstance(e.parse("prose"), Violation)


def test_correction_says_what_was_wrong_and_repeats_the_protocol():
    e = emu(tools=[WEATHER])
    text = e.correction("there is no tool \"x\"")
    assert 'there is no tool "x"' in text and PROTOCOL_HEAD in text


def test_strip_fence_and_call_ids():
    assert strip_fence("```\n{}\n```") == "{}" and strip_fence("```json {\"a\":1}```") == '{"a":1}'
    a, b = new_call_id(), new_call_id()
    assert a.startswith("call_") and a != b and a[5:].isalnum()


# -- the stream gate ----------------------------------------------------------------------------

@pytest.mark.parametrize("snapshots, shown", [
    (["", "  ", "It", "It is"], [False, False, True, True]),
    (["`", "``", "```json", "```json\n{"], [False, False, False, False]),
    (["{", '{"tool_calls"'], [False, False]),
])
def test_gate_holds_until_the_start_shows_prose(snapshots, shown):
    gate = Gate(emu(tools=[WEATHER]))
    assert [gate.feed(s) for s in snapshots] == shown


def test_gate_never_opens_when_prose_is_not_allowed():
    for body in ({"tools": [WEATHER], "tool_choice": "required"}, {"response_format": {"type": "json_object"}}):
        gate = Gate(parse_request(body))
        assert not gate.feed("Plain words")


# -- TOOLS_EMULATION=0 --------------------------------------------------------------------------

def test_emulation_off_ignores_the_fields_and_keeps_the_old_prompt():
    from cdp.app.conversation import ChatSpec
    from cdp.entry.api.tooling import emulation_of
    from cdp.entry.openai.errors import OpenAIError

    body = {"tools": [{"type": "function", "function": {"name": "bad name"}}], "tool_choice": "required"}
    assert emulation_of(body, enabled=False) is None  # not even checked
    with pytest.raises(OpenAIError) as info:
        emulation_of(body, enabled=True)
    assert info.value.status == 400 and info.value.param == "tools[0].function.name"
    spec = ChatSpec(request_id="r", model="m", messages=AGENT_HISTORY, stream=False)
    from tests.unit.test_edge_failures import service

    svc = service(rest=None)
    old, _ = svc.build_prompt(spec)
    assert PROTOCOL_HEAD not in old and TOOL_RESULT_HEAD not in old
    new, _ = svc.build_prompt(ChatSpec(**{**spec.__dict__, "emulation": emulation_of({"tools": [WEATHER]}, True)}))
    assert PROTOCOL_HEAD in new and f"{TOOL_RESULT_HEAD} call_1 (get_weather)" in new


def test_tools_emulation_is_on_by_default(clean_env):
    from cdp.settings import load_settings

    assert load_settings().TOOLS_EMULATION is True
    assert load_settings(TOOLS_EMULATION="0").TOOLS_EMULATION is False


def test_a_schema_error_quoting_a_huge_value_is_cut():
    e = emu(tools=[WEATHER])
    got = e.parse(json.dumps({"tool_calls": [{"name": "get_weather", "arguments": {"city": ["x" * 5000]}}]}))
    assert isinstance(got, Violation) and len(got.reason) < 500 and "at city" in got.reason


def test_text_after_a_leading_block_is_ignored():
    e = emu(tools=[WEATHER])
    a = e.parse('```json\n{"tool_calls":[{"name":"get_weather","arguments":{"city":"P"}}]}\n```\nI will check.', ids())
    assert isinstance(a, ToolCallsAnswer)
    assert isinstance(e.parse('{"tool_calls":[{"name":"get_weather","arguments":{"city":"P"}}]} done'), ToolCallsAnswer)
    j = emu(response_format={"type": "json_object"})
    assert j.parse('```json\n{"a": 1}\n```\nHope this helps!') == TextAnswer('{"a": 1}')
    assert j.parse('{"a": 1}\n\nThat is all.') == TextAnswer('{"a": 1}')
    assert isinstance(j.parse('Here: {"a": 1}'), Violation)  # prose first is not JSON
