"""Tool calls and JSON mode emulated through the prompt, end to end: the openai SDK and LangChain →
cdp → fake Discord → the simulated Coze bot following (or breaking) the answer protocol."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support.stack import API_KEY, MODES, Stack, prompt_messages, start_stack

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "note": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "description": "The time",
                                          "parameters": {"type": "object", "properties": {}}}}
PROTOCOL_HEAD = "=== ANSWER PROTOCOL (follow it exactly) ==="
CORRECTION_HEAD = "Your previous answer broke the answer protocol"


@pytest.fixture(scope="module")
def stack(request, fake) -> Iterator[Stack]:
    """The memory topology, unless a test asks for both (`in_both_modes`): the protocol is the API
    process's business; the agent loop and the repair round also run distributed (listener → DynamoDB
    → API), where the correction's reply is read back through the shared store."""
    s = start_stack(getattr(request, "param", "memory"), fake)
    yield s
    s.stop()


in_both_modes = pytest.mark.parametrize("stack", MODES, indirect=True)


def marker() -> str:
    return "t" + uuid.uuid4().hex[:12]


def ask(text: str) -> list[dict]:
    return [{"role": "system", "content": "You are an agent."}, {"role": "user", "content": text}]


async def stream_chunks(client: openai.AsyncOpenAI, **kw) -> list:
    stream = await client.chat.completions.create(**{"model": "gpt-4o", **kw}, stream=True)
    return [c async for c in stream]


def channel_of(fake, m: str) -> list[dict]:
    """Every message of the channel where the prompt with marker `m` was posted."""
    (prompt,) = [p for p in prompt_messages(fake, m) if PROTOCOL_HEAD in p["content"]
                 and CORRECTION_HEAD not in p["content"]]
    return fake.messages(prompt["channel_id"])


@in_both_modes
async def test_two_step_agent_loop_with_the_sdk(stack):
    m = marker()
    messages = ask(f"Weather in Paris? {m} [[sim:tool_args='{{\"city\": \"Paris\"}}']]")
    async with stack.client() as client:
        first = await client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER, CLOCK])
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        (call,) = choice.message.tool_calls
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
        posted = prompt_messages(stack.fake, m)[-1]["content"]
        assert PROTOCOL_HEAD in posted and '"name":"get_time"' in posted  # the schemas went into the prompt
        messages += [choice.message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "22 C and sunny"}]
        second = await client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER, CLOCK])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.tool_calls is None
    assert "22 C and sunny" in second.choices[0].message.content
    prompts = [p["content"] for p in prompt_messages(stack.fake, m)]
    assert any(f"Result of tool call {call.id} (get_weather)" in p for p in prompts)  # the result went back


async def test_streamed_tool_call_follows_openai_chunk_format(stack):
    m = marker()
    note = "n" * 600  # arguments longer than one fragment
    args = json.dumps({"city": "Oslo", "note": note})
    async with stack.client() as client:
        chunks = await stream_chunks(client, messages=ask(f"{m} [[sim:tool_args='{args}']]"), tools=[WEATHER],
                                     stream_options={"include_usage": True})
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant" and not deltas[0].content
    assert all(not d.content for d in deltas)  # nothing of the answer leaks as text
    calls = [d.tool_calls[0] for d in deltas if d.tool_calls]
    head, fragments = calls[0], calls[1:]
    assert head.index == 0 and head.id.startswith("call_") and head.type == "function"
    assert head.function.name == "get_weather" and head.function.arguments == ""
    assert len(fragments) >= 3 and all(f.index == 0 and f.id is None and f.function.name is None for f in fragments)
    assert json.loads("".join(f.function.arguments for f in fragments)) == {"city": "Oslo", "note": note}
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["tool_calls"]
    assert chunks[-1].usage.prompt_tokens > 0


async def test_streamed_prose_flows_once_it_is_not_a_tool_call(stack):
    m = marker()
    async with stack.client() as client:
        chunks = await stream_chunks(client, messages=ask(f"Just chat {m} [[sim:no_tool edits=12]]"),
                                     tools=[WEATHER])
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) >= 3  # streamed edit by edit, not held to the end
    assert "".join(texts).startswith("You said:")
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_tool_choice_named_and_required(stack):
    m = marker()
    async with stack.client() as client:
        named = await client.chat.completions.create(
            model="gpt-4o", messages=ask(f"{m}"), tools=[WEATHER, CLOCK],
            tool_choice={"type": "function", "function": {"name": "get_time"}})
        assert named.choices[0].message.tool_calls[0].function.name == "get_time"
        assert "REQUIRED CALL: get_time" in prompt_messages(stack.fake, m)[-1]["content"]
        none = await client.chat.completions.create(model="gpt-4o", messages=ask(f"{m} plain"),
                                                    tools=[WEATHER], tool_choice="none")
    assert none.choices[0].finish_reason == "stop" and none.choices[0].message.content.startswith("You said:")
    assert PROTOCOL_HEAD not in prompt_messages(stack.fake, f"{m} plain")[-1]["content"]


@in_both_modes
@pytest.mark.parametrize("stream", [False, True])
async def test_a_broken_answer_gets_one_repair_round(stack, stream):
    m = marker()
    kw = dict(model="gpt-4o", tools=[WEATHER], tool_choice="required",
              messages=ask(f"{m} [[sim:tools_break=once break=prose tool_args='{{\"city\": \"Rome\"}}']]"))
    async with stack.client() as client:
        if stream:
            chunks = await stream_chunks(client, **kw)
            assert not any(c.choices[0].delta.content for c in chunks if c.choices)  # the prose never showed
            calls = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
            assert calls[0].function.name == "get_weather"
            assert chunks[-1].choices[0].finish_reason == "tool_calls"
        else:
            done = await client.chat.completions.create(**kw)
            assert done.choices[0].finish_reason == "tool_calls"
            assert json.loads(done.choices[0].message.tool_calls[0].function.arguments) == {"city": "Rome"}
    msgs = channel_of(stack.fake, m)
    users = [x for x in msgs if not x["author"].get("bot")]
    assert len(users) == 2 and users[0]["author"]["id"] == users[1]["author"]["id"]  # same channel, same user
    assert users[1]["content"].startswith(CORRECTION_HEAD + ": a tool call was required")


async def test_an_answer_broken_twice_is_a_clear_error(stack):
    m, m2 = marker(), marker()
    body = {"model": "gpt-4o", "tools": [WEATHER], "messages": ask(f"{m} [[sim:tools_break=always]]")}
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(stack.url + "/v1/chat/completions", json=body,
                            headers={"Authorization": f"Bearer {API_KEY}"})
        assert r.status_code == 502 and r.headers["x-should-retry"] == "false"
        err = r.json()["error"]
        assert err["code"] == "invalid_model_output" and 'no tool "no_such_tool"' in err["message"]
        body["messages"] = ask(f"{m2} [[sim:tools_break=always]]")
        r = await http.post(stack.url + "/v1/chat/completions", json={**body, "stream": True},
                            headers={"Authorization": f"Bearer {API_KEY}"})
        frames = [f.removeprefix("data: ") for f in r.text.split("\n\n") if f.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    assert json.loads(frames[-2])["error"]["code"] == "invalid_model_output"
    for mark in (m, m2):  # one correction per request
        assert sum(CORRECTION_HEAD in x["content"] for x in channel_of(stack.fake, mark)) == 1


async def test_json_mode_answers_checked_json(stack):
    m = marker()
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}},
              "required": ["city", "temp"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "weather", "schema": schema, "strict": True}}
    async with stack.client() as client:
        plain = await client.chat.completions.create(
            model="gpt-4o", messages=ask(f"{m} [[sim:json='{{\"a\": [1, 2]}}']]"),
            response_format={"type": "json_object"})
        assert json.loads(plain.choices[0].message.content) == {"a": [1, 2]}  # the ```json fence is gone
        repaired = await client.chat.completions.create(
            model="gpt-4o", messages=ask(f"{m}r [[sim:tools_break=once break=badjson]]"), response_format=fmt)
        assert json.loads(repaired.choices[0].message.content) == {"city": "x", "temp": 1}
        chunks = await stream_chunks(client, messages=ask(f"{m}s [[sim:json='{{\"city\": \"Lima\", \"temp\": 9}}']]"),
                                     response_format=fmt)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text) == {"city": "Lima", "temp": 9}
    with pytest.raises(openai.APIStatusError) as info:
        async with stack.client() as client:
            await client.chat.completions.create(
                model="gpt-4o", messages=ask(f"{m}b [[sim:tools_break=always]]"), response_format=fmt)
    assert info.value.status_code == 502 and "not valid JSON" in info.value.message


@pytest.mark.parametrize("streamed", [False, True])
async def test_max_tokens_and_stop_cut_text_answers_but_never_a_tool_call(stack, streamed):
    """The client's limits hold on the emulated path as on the plain one: prose and JSON mode are cut
    (finish_reason "length" / "stop"); a tool call is sent whole (its arguments only work whole)."""
    m = marker()

    async def answer(**kw) -> tuple[str, str, list]:
        async with stack.client() as client:
            if streamed:
                chunks = await stream_chunks(client, **kw)
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
                return text, [c.choices[0].finish_reason for c in chunks if c.choices and
                              c.choices[0].finish_reason][-1], calls
            done = await client.chat.completions.create(model="gpt-4o", **kw)
            c = done.choices[0]
            return c.message.content or "", c.finish_reason, c.message.tool_calls or []

    full, reason, _ = await answer(messages=ask(f"Just chat {m} [[sim:no_tool edits=6]]"), tools=[WEATHER])
    assert reason == "stop" and full.startswith("You said:")
    cut, reason, _ = await answer(messages=ask(f"Just chat {m}a [[sim:no_tool edits=6]]"), tools=[WEATHER],
                                  max_tokens=3)
    assert reason == "length" and 0 < len(cut) < len(full) and full.startswith(cut)
    text, reason, _ = await answer(messages=ask(f"{m}j [[sim:json='{{\"city\": \"Lima\", \"temp\": 9}}']]"),
                                   response_format={"type": "json_object"}, stop=["Lima"])
    assert reason == "stop" and text == '{"city": "'
    _, reason, calls = await answer(messages=ask(f"{m}t [[sim:tool_args='{{\"city\": \"Paris\"}}']]"),
                                    tools=[WEATHER], max_tokens=1, stop=["Paris"])
    assert reason == "tool_calls" and calls


@pytest.mark.parametrize("extra, param", [
    ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools[0].function.name"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": 3}}}},
     "response_format.json_schema.schema"),
])
async def test_bad_tools_and_formats_are_openai_400s(stack, extra, param):
    before = len(stack.fake.created_channels())
    async with stack.client() as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=ask("hi"), **extra)
    assert info.value.body["param"] == param and info.value.body["type"] == "invalid_request_error"
    assert len(stack.fake.created_channels()) == before  # refused before anything was posted


async def test_langchain_bind_tools_agent_loop_and_json_mode(stack):
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """The current weather of a city."""
        return f"{city}: 18 C, light rain"

    llm = ChatOpenAI(model="gpt-4o", base_url=stack.url + "/v1", api_key=API_KEY, max_retries=0, timeout=30)
    agent = llm.bind_tools([get_weather])
    m = marker()
    history = [HumanMessage(f"Weather in Bergen? {m} [[sim:tool_args='{{\"city\": \"Bergen\"}}']]")]
    ai = await agent.ainvoke(history)
    assert [c["name"] for c in ai.tool_calls] == ["get_weather"] and ai.tool_calls[0]["args"] == {"city": "Bergen"}
    history += [ai, ToolMessage(get_weather.invoke(ai.tool_calls[0]["args"]), tool_call_id=ai.tool_calls[0]["id"])]
    final = await agent.ainvoke(history)
    assert not final.tool_calls and "Bergen: 18 C, light rain" in final.content

    streamed = None
    async for chunk in agent.astream([HumanMessage(f"{m}s [[sim:tool_args='{{\"city\": \"Oslo\"}}']]")]):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed.tool_calls[0]["args"] == {"city": "Oslo"}

    structured = llm.with_structured_output(method="json_mode")
    out = await structured.ainvoke(f"Answer in json {m}j [[sim:json='{{\"city\": \"Bergen\", \"rain\": true}}']]")
    assert out == {"city": "Bergen", "rain": True}


async def test_sdk_helpers_parse_and_stream_with_pydantic_models(stack):
    from pydantic import BaseModel

    class Forecast(BaseModel):
        city: str
        days: int

    class GetForecast(BaseModel):
        """Forecast of a city."""

        city: str
        days: int

    m = marker()
    async with stack.client() as client:
        parsed = await client.chat.completions.parse(
            model="gpt-4o", messages=ask(f"{m} [[sim:json='{{\"city\": \"Nice\", \"days\": 3}}']]"),
            response_format=Forecast)
        assert parsed.choices[0].message.parsed == Forecast(city="Nice", days=3)
        async with client.chat.completions.stream(
                model="gpt-4o", messages=ask(f"{m}s [[sim:tool_args='{{\"city\": \"Nice\", \"days\": 2}}']]"),
                tools=[openai.pydantic_function_tool(GetForecast)]) as stream:
            final = await stream.get_final_completion()
    (call,) = final.choices[0].message.tool_calls
    assert call.function.parsed_arguments == GetForecast(city="Nice", days=2)
    assert final.choices[0].finish_reason == "tool_calls"
