"""Hypothesis over the bodies of POST /v1/chat/completions and /v1/images/generations, sent over HTTP
to a running `cdp serve`: every field either shaped as OpenAI documents it or any JSON at all, and now
and then a body that is not JSON. Unlike the schema fuzzer (test_openapi_fuzz.py), this does not
depend on what /openapi.json says about the bodies, and most bodies are nearly valid, so the checks
deep in the request (content parts, images, channelId, n, out-time) are reached.

Checked on every answer: no status >= 500; every 4xx is OpenAI's error shape with the parameter at
fault named when the body is JSON; a 200 stream ends with `[DONE]` or an error frame.
"""

from __future__ import annotations

import json
import os

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.fuzz.served import ADMIN_KEY
from tests.fuzz.test_openapi_fuzz import openai_error_problem
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("CDP_FUZZ_BODY_EXAMPLES", "30"))
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                max_size=3),
                    max_leaves=6)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)
PNG_DATA_URL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwAD"
                "hgGAWjR9awAAAABJRU5ErkJggg==")


def either(shaped, odds: int = 12):
    """The shaped value, or once in `odds` any JSON (what shrinks is the shaped one)."""
    return st.integers(0, odds - 1).flatmap(lambda i: JSON if i == odds - 1 else shaped)


PART = either(st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": either(TEXT)}),
    st.fixed_dictionaries({"type": st.just("image_url"),
                           "image_url": either(st.fixed_dictionaries({"url": st.sampled_from(
                               [PNG_DATA_URL, "data:image/png;base64,!!", "http://127.0.0.1:1/x.png", "",
                                "ftp://x/y.png", "data:text/plain;base64,aGk="])}))}),
    st.fixed_dictionaries({"type": st.sampled_from(["file", "input_file", "input_text", "input_image", "tool"])},
                          optional={"text": JSON, "file": JSON, "image_url": JSON})))
MESSAGE = either(st.fixed_dictionaries(
    {"role": either(st.sampled_from(["system", "user", "assistant", "developer", "tool"])),
     "content": either(st.one_of(TEXT, st.lists(PART, max_size=3)))},
    optional={"name": either(TEXT)}))
CHAT = st.fixed_dictionaries(
    {"model": either(st.sampled_from(["gpt-4o", "gpt-3.5-turbo", "coze"])),
     "messages": either(st.lists(MESSAGE, min_size=1, max_size=3))},
    optional={"stream": either(st.booleans()),
              "stream_options": either(st.fixed_dictionaries({"include_usage": either(st.booleans())})),
              "n": either(st.integers(-1, 3)),
              "channelId": either(st.sampled_from(["1100000000000000002", "1500000000000000002", "123",
                                                   "99999999999999999"])),
              "max_tokens": JSON, "temperature": JSON, "tools": JSON})
IMAGES = st.fixed_dictionaries(
    {"prompt": either(TEXT)},
    optional={"model": either(st.sampled_from(["dall-e-3", "gpt-4o"])),
              "n": either(st.integers(-1, 6)),
              "size": either(st.sampled_from(["1024x1024", "256x256", "big"])),
              "response_format": either(st.sampled_from(["url", "b64_json", "svg"])),
              "channelId": either(st.just("1100000000000000002"))})
RAW = st.one_of(st.just(b""), st.just(b"{"), st.just(b"[]"), st.just(b"\xff\xfe"), st.just(b"null"),
                st.just(b'{"model": "gpt-4o", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
                st.binary(max_size=30))
OUT_TIME = st.one_of(st.none(), st.sampled_from(["3", "0", "-1", "abc", "1e400", "nan", "4.5"]))


def check(path: str, response: httpx.Response, body_was_json: bool) -> None:
    status, text = response.status_code, response.text
    assert status < 500, f"{path} answered {status}: {text[:500]}"
    if 400 <= status < 500:
        problem = openai_error_problem(response.json())
        assert problem is None, f"{path} {status}: {problem}: {text[:500]}"
    elif response.headers.get("content-type", "").startswith("text/event-stream"):
        frames = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        assert frames and (frames[-1] == "[DONE]" or '"error"' in frames[-1]), f"{path}: a stream ended with " \
                                                                               f"{frames[-1:]!r}"


def send(stack: Stack, path: str, body: object, out_time: str | None) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}
    if out_time is not None:
        headers["out-time"] = out_time
    response = httpx.post(stack.url + path, content=raw, headers=headers, timeout=30)
    event(f"{path} {response.status_code}")  # --hypothesis-show-statistics: what the bodies reached
    try:
        check(path, response, not isinstance(body, bytes))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n  body: {raw[:600]!r}\n  out-time: {out_time!r}") from None


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(body=st.integers(0, 7).flatmap(lambda i: RAW if i == 7 else CHAT), out_time=OUT_TIME)
def test_fuzz_chat_bodies(served: Stack, body, out_time) -> None:
    send(served, "/v1/chat/completions", body, out_time)


@settings(max_examples=EXAMPLES // 2, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(body=st.integers(0, 7).flatmap(lambda i: RAW if i == 7 else IMAGES), out_time=OUT_TIME)
def test_fuzz_images_bodies(served: Stack, body, out_time) -> None:
    send(served, "/v1/images/generations", body, out_time)
