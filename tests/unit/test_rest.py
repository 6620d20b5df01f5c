"""DiscordRest against httpx.MockTransport: headers, bodies, multipart, error mapping, retries."""

from __future__ import annotations

import json

import httpx
import pytest
from cdp.adapters.discord.rest import DiscordRest, UploadFile
from cdp.domain import discord as E
from cdp.domain.secrets import fingerprint

BOT = "MTIwMDAwMDAwMDAwMDAwMDAwMQ.bot-secret.abcdefghijklmnop"
USER = "user-secret-token.0000000000000000000000001"
BASE = "http://discord.test/api/v10"


def make(handler, **kw) -> DiscordRest:
    return DiscordRest(
        api_base=BASE,
        bot_token=BOT,
        user_agent="Mozilla/5.0 TestBrowser",
        transport=httpx.MockTransport(handler),
        transient_backoff=0.0,
        **kw,
    )


def parse_multipart(req: httpx.Request) -> dict[str, tuple[str | None, bytes]]:
    ctype = req.headers["content-type"]
    boundary = ctype.split("boundary=")[1].encode()
    out = {}
    for part in req.content.split(b"--" + boundary):
        if b"\r\n\r\n" not in part:
            continue
        head, body = part.split(b"\r\n\r\n", 1)
        body = body.rsplit(b"\r\n", 1)[0]
        disp = next(h for h in head.decode().split("\r\n") if h.lower().startswith("content-disposition"))
        name = disp.split('name="')[1].split('"')[0]
        fname = disp.split('filename="')[1].split('"')[0] if 'filename="' in disp else None
        out[name] = (fname, body)
    return out


async def test_user_message_headers_and_body():
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, json={"id": "99", "nonce": "n1"})

    rest = make(handler)
    msg = await rest.send_user_message(USER, "123", "hi <@777>", nonce="n1", allowed_user_ids=["777"])
    await rest.aclose()
    assert msg["id"] == "99"
    req = seen[0]
    assert str(req.url) == f"{BASE}/channels/123/messages"
    assert req.headers["authorization"] == USER  # raw, no "Bot " prefix
    assert req.headers["user-agent"] == "Mozilla/5.0 TestBrowser"
    assert req.headers["origin"] == "https://discord.com"
    assert req.headers["referer"] == "https://discord.com/channels/@me"
    assert req.headers["x-discord-locale"] == "en-US"
    assert "accept-language" in req.headers
    body = json.loads(req.content)
    assert body["content"] == "hi <@777>"  # sent as given: splitting is the caller's job
    assert body["allowed_mentions"] == {"parse": [], "users": ["777"]}
    assert body["nonce"] == "n1" and body["enforce_nonce"] is True


async def test_long_content_is_not_split():
    seen = []

    def handler(req):
        seen.append(req)
        return httpx.Response(200, json={"id": "1"})

    rest = make(handler)
    await rest.send_user_message(USER, "1", "x" * 4500, nonce="n", allowed_user_ids=[])
    await rest.aclose()
    assert len(seen) == 1 and len(json.loads(seen[0].content)["content"]) == 4500


async def test_bot_calls_use_bot_prefix():
    seen = []

    def handler(req):
        seen.append(req)
        if req.url.path.endswith("/channels"):
            return httpx.Response(201, json={"id": "5", "name": "cdp-chat-x"})
        return httpx.Response(200, json={"url": "wss://gw"})

    rest = make(handler)
    assert (await rest.get_gateway_bot())["url"] == "wss://gw"
    ch = await rest.create_channel("42", "cdp-chat-x", 0, parent_id="7")
    await rest.aclose()
    assert ch["id"] == "5"
    assert all(r.headers["authorization"] == f"Bot {BOT}" for r in seen)
    assert str(seen[0].url) == f"{BASE}/gateway/bot"
    assert json.loads(seen[1].content) == {"name": "cdp-chat-x", "type": 0, "parent_id": "7"}


async def test_multipart_upload_shape():
    seen = []

    def handler(req):
        seen.append(req)
        return httpx.Response(200, json={"id": "1", "attachments": [{"id": "a", "url": "https://cdn/x.png"}]})

    rest = make(handler)
    files = [UploadFile("a.png", b"\x89PNGdata", "image/png"), UploadFile("b.txt", b"hello", "text/plain")]
    await rest.send_bot_message("9", "see", files=files)
    await rest.send_user_message(USER, "9", "p", nonce="n2", allowed_user_ids=["1"], files=files[:1])
    await rest.aclose()
    parts = parse_multipart(seen[0])
    payload = json.loads(parts["payload_json"][1])
    assert payload["content"] == "see"
    assert payload["attachments"] == [{"id": 0, "filename": "a.png"}, {"id": 1, "filename": "b.txt"}]
    assert payload["enforce_nonce"] is True and payload["nonce"]
    assert parts["files[0]"] == ("a.png", b"\x89PNGdata")
    assert parts["files[1]"] == ("b.txt", b"hello")
    user_payload = json.loads(parse_multipart(seen[1])["payload_json"][1])
    assert user_payload["nonce"] == "n2" and user_payload["allowed_mentions"] == {"parse": [], "users": ["1"]}
    assert seen[1].headers["authorization"] == USER


@pytest.mark.parametrize(
    ("status", "body", "exc"),
    [
        (401, {"code": 0, "message": "401: Unauthorized"}, E.DiscordUnauthorized),
        (
            403,
            {"code": 40002, "message": "You need to verify your account in order to perform this action."},
            E.DiscordVerificationRequired,
        ),
        (403, {"code": 50013, "message": "Missing Permissions"}, E.DiscordForbidden),
        (404, {"code": 10003, "message": "Unknown Channel"}, E.DiscordNotFound),
        (
            400,
            {"code": 30013, "message": "Maximum number of server channels reached (500)"},
            E.DiscordMaxChannels,
        ),
        (
            400,
            {"code": 50035, "message": "Invalid Form Body", "errors": {"content": {}}},
            E.DiscordInvalidForm,
        ),
        (502, "<html>bad gateway</html>", E.DiscordUnavailable),
        (
            400,
            {"code": 160004, "message": "A thread has already been created for this message"},
            E.DiscordError,
        ),
    ],
)
async def test_error_mapping(status, body, exc):
    def handler(req):
        if isinstance(body, dict):
            return httpx.Response(status, json=body)
        return httpx.Response(status, text=body)

    rest = make(handler)
    with pytest.raises(exc) as ei:
        await rest.create_channel("1", "x")
    await rest.aclose()
    err = ei.value
    assert err.status == status
    if isinstance(body, dict):
        assert err.code == body["code"]
    assert BOT not in str(err) and BOT not in repr(err.to_dict())
    if exc is E.DiscordVerificationRequired:
        assert isinstance(err, E.DiscordForbidden)


async def test_429_then_success_waits_and_retries():
    calls = []

    def handler(req):
        calls.append(req)
        if len(calls) == 1:
            return httpx.Response(
                429,
                json={"message": "You are being rate limited.", "retry_after": 0.05, "global": False},
                headers={"Retry-After": "1"},
            )
        return httpx.Response(200, json={"id": "1"})

    rest = make(handler)
    assert (await rest.get_channel("3"))["id"] == "1"
    await rest.aclose()
    assert len(calls) == 2


async def test_429_beyond_budget_raises_rate_limited():
    def handler(req):
        return httpx.Response(429, json={"message": "slow down", "retry_after": 120.0, "global": True})

    rest = make(handler, max_rate_limit_wait=1.0)
    with pytest.raises(E.DiscordRateLimited) as ei:
        await rest.get_channel("3")
    await rest.aclose()
    assert ei.value.retry_after == 120.0


async def test_user_send_retries_on_5xx_and_timeout_with_same_nonce():
    seen = []

    def handler(req):
        seen.append(json.loads(req.content))
        if len(seen) == 1:
            raise httpx.ReadTimeout("timed out", request=req)
        if len(seen) == 2:
            return httpx.Response(503, text="upstream")
        return httpx.Response(200, json={"id": "7"})

    rest = make(handler)
    msg = await rest.send_user_message(USER, "1", "p", nonce="abc", allowed_user_ids=[])
    await rest.aclose()
    assert msg["id"] == "7"
    assert [b["nonce"] for b in seen] == ["abc", "abc", "abc"]


async def test_create_channel_not_retried_on_5xx():
    calls = []

    def handler(req):
        calls.append(req)
        return httpx.Response(500, json={"message": "oops", "code": 0})

    rest = make(handler)
    with pytest.raises(E.DiscordUnavailable):
        await rest.create_channel("1", "x")
    await rest.aclose()
    assert len(calls) == 1


async def test_network_error_is_unavailable_and_bounded():
    calls = []

    def handler(req):
        calls.append(req)
        raise httpx.ConnectError("refused", request=req)

    rest = make(handler)
    with pytest.raises(E.DiscordUnavailable):
        await rest.get_guild("1")
    await rest.aclose()
    assert len(calls) == 3


async def test_no_token_in_logs_or_errors(caplog):
    caplog.set_level(1)

    def handler(req):
        # an (unlikely) echo of the token must be scrubbed too
        return httpx.Response(401, json={"code": 0, "message": f"bad token {req.headers['authorization']}"})

    rest = make(handler)
    with pytest.raises(E.DiscordUnauthorized) as ei:
        await rest.send_user_message(USER, "1", "p", nonce="n", allowed_user_ids=[])
    with pytest.raises(E.DiscordUnauthorized) as ei2:
        await rest.get_current_user()
    await rest.aclose()
    text = caplog.text + str(ei.value) + str(ei2.value)
    assert USER not in text and BOT not in text
    assert fingerprint(USER) in str(ei.value)


def test_fingerprint_stable_and_short():
    assert fingerprint(USER) == fingerprint(USER + " ")
    assert fingerprint(USER).startswith("tok:") and len(fingerprint(USER)) == 12
    assert fingerprint(USER) != fingerprint(BOT)
