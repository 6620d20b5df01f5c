"""The API's one key check (cdp.entry.api.common.KeyCheck) and the out-time header."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from cdp.entry.api.common import BEARER, KeyCheck, out_time
from cdp.entry.openai.errors import OpenAIError
from starlette.requests import Request


class Refused(Exception):
    pass


def request(keys: str, **headers: str) -> Request:
    app = SimpleNamespace(state=SimpleNamespace(runtime=SimpleNamespace(settings=SimpleNamespace(
        api_keys=[k for k in keys.split(",") if k]))))
    return Request({"type": "http", "app": app, "headers": [(k.lower().encode(), v.encode())
                                                             for k, v in headers.items()]})


def test_sources_in_order_and_constant_answer():
    check = KeyCheck(BEARER, "proxy-secret", refuse=Refused)
    assert check(request("k1,k2", Authorization="Bearer k2")) == "k2"
    assert check(request("k1,k2", Authorization="bearer  k1 ")) == "k1"
    assert check(request("k1", **{"proxy-secret": "k1"})) == "k1"
    assert check(request("k1", Authorization="Basic k1", **{"proxy-secret": "k1"})) == "k1"
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer k3"},
                    {"Authorization": "Basic k1"}, {"proxy-secret": "wrong"}):
        with pytest.raises(Refused):
            check(request("k1,k2", **headers))


def test_only_the_named_sources_count():
    with pytest.raises(Refused):
        KeyCheck("proxy-secret", refuse=Refused)(request("k1", Authorization="Bearer k1"))
    with pytest.raises(Refused):
        KeyCheck(BEARER, refuse=Refused)(request("k1", **{"proxy-secret": "k1"}))


def test_without_keys_the_api_is_open_and_the_key_sent_is_returned():
    check = KeyCheck(BEARER, refuse=Refused)
    assert check(request("")) is None
    assert check(request("", Authorization="Bearer anything")) == "anything"
    assert check(request("", Authorization="Token anything")) is None


def test_out_time_header():
    assert out_time(request("")) is None and out_time(request("", **{"out-time": " "})) is None
    assert out_time(request("", **{"out-time": "12.5"})) == 12.5
    for bad in ("soon", "0", "901", "-1"):
        with pytest.raises(OpenAIError) as exc:
            out_time(request("", **{"out-time": bad}))
        assert exc.value.status == 400 and exc.value.param == "out-time"
