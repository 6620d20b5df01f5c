"""The API's one key check (cdp.entry.api.common.KeyCheck) and the out-time header."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from cdp.entry.api.common import ADMIN, BEARER, CREATE, KeyCheck, openai_refusal, out_time
from cdp.entry.openai.errors import OpenAIError
from starlette.requests import Request


class Refused(Exception):
    def __init__(self, status: int = 401, why: str = "") -> None:
        super().__init__(status, why)
        self.status = status


def request(keys: str, admin: str = "", **headers: str) -> Request:
    app = SimpleNamespace(state=SimpleNamespace(runtime=SimpleNamespace(settings=SimpleNamespace(
        api_keys=[k for k in keys.split(",") if k], admin_keys=[k for k in admin.split(",") if k]))))
    return Request({"type": "http", "app": app, "headers": [(k.lower().encode(), v.encode())
                                                             for k, v in headers.items()]})


def test_sources_in_order_and_constant_answer():
    check = KeyCheck(BEARER, "proxy-secret", refuse=Refused)
    assert check.check(request("k1,k2", Authorization="Bearer k2")) == "k2"
    assert check.check(request("k1,k2", Authorization="bearer  k1 ")) == "k1"
    assert check.check(request("k1", **{"proxy-secret": "k1"})) == "k1"
    assert check.check(request("k1", Authorization="Basic k1", **{"proxy-secret": "k1"})) == "k1"
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer k3"},
                    {"Authorization": "Basic k1"}, {"proxy-secret": "wrong"}):
        with pytest.raises(Refused):
            check.check(request("k1,k2", **headers))


def test_only_the_named_sources_count():
    with pytest.raises(Refused):
        KeyCheck("proxy-secret", refuse=Refused).check(request("k1", Authorization="Bearer k1"))
    with pytest.raises(Refused):
        KeyCheck(BEARER, refuse=Refused).check(request("k1", **{"proxy-secret": "k1"}))


def test_without_keys_the_api_is_open_and_the_key_sent_is_returned():
    check = KeyCheck(BEARER, refuse=Refused)
    assert check.check(request("")) is None
    assert check.check(request("", Authorization="Bearer anything")) == "anything"
    assert check.check(request("", Authorization="Token anything")) is None


def test_admin_and_create_routes_never_run_without_a_key():
    for level in (ADMIN, CREATE):
        check = KeyCheck(BEARER, "proxy-secret", refuse=Refused, level=level)
        for headers in ({}, {"Authorization": "Bearer anything"}, {"proxy-secret": "anything"}):
            with pytest.raises(Refused) as exc:
                check.check(request("", **headers))
            assert exc.value.status == 401
    err = openai_refusal(401, "This route needs a key and none is configured: set PROXY_SECRET ...")
    assert err.status == 401 and "PROXY_SECRET" in err.message and err.code == "invalid_api_key"


def test_without_admin_keys_chat_keys_serve_the_admin_routes():
    check = KeyCheck(BEARER, "proxy-secret", refuse=Refused, level=ADMIN)
    assert check.check(request("k1,k2", Authorization="Bearer k2")) == "k2"
    with pytest.raises(Refused):
        check.check(request("k1,k2", Authorization="Bearer k3"))


def test_admin_keys_guard_the_admin_routes_and_chat_keys_get_403():
    admin = KeyCheck(BEARER, "proxy-secret", refuse=Refused, level=ADMIN)
    assert admin.check(request("k1", admin="a1,a2", Authorization="Bearer a2")) == "a2"
    assert admin.check(request("", admin="a1", **{"proxy-secret": "a1"})) == "a1"  # admin keys alone suffice
    with pytest.raises(Refused) as exc:
        admin.check(request("k1", admin="a1", Authorization="Bearer k1"))
    assert exc.value.status == 403
    for headers in ({}, {"Authorization": "Bearer nope"}):
        with pytest.raises(Refused) as exc:
            admin.check(request("k1", admin="a1", **headers))
        assert exc.value.status == 401
    assert openai_refusal(403, "no").status == 403 and openai_refusal(403, "no").code == "admin_key_required"
    # an admin key also works wherever a chat key does; a chat key does not become an admin key
    create = KeyCheck("proxy-secret", refuse=Refused, level=CREATE)
    assert create.check(request("k1", admin="a1", **{"proxy-secret": "a1"})) == "a1"
    assert create.check(request("k1", admin="a1", **{"proxy-secret": "k1"})) == "k1"
    chat = KeyCheck(BEARER, refuse=Refused)
    assert chat.check(request("k1", admin="a1", Authorization="Bearer a1")) == "a1"
    # with no PROXY_SECRET the chat API stays open (cdp serve refuses that beyond loopback)
    assert chat.check(request("", admin="a1")) is None


def test_out_time_header():
    assert out_time(request("")) is None and out_time(request("", **{"out-time": " "})) is None
    assert out_time(request("", **{"out-time": "12.5"})) == 12.5
    for bad in ("soon", "0", "901", "-1"):
        with pytest.raises(OpenAIError) as exc:
            out_time(request("", **{"out-time": bad}))
        assert exc.value.status == 400 and exc.value.param == "out-time"


def test_the_dependency_is_async():
    """FastAPI runs a sync dependency in a worker thread: one thread hop per request, measurable at 100 streams."""
    import inspect

    assert inspect.iscoroutinefunction(KeyCheck.__call__)
