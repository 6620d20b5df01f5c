"""Issue 10, items 5 and 6 in units: SSRF without gaps (the address checked is the address connected
to), the download budget, the caps of the prompt, bounded timeouts, the interactions body limit."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from cdp.adapters import media
from cdp.adapters.media import DownloadBudget, ImageFetchError, fetch_image, http_client, is_public_address
from cdp.domain.prompt import PromptError, check_request_size, split_within
from cdp.settings import MAX_REQUEST_SECONDS, SettingsError, load_settings
from cdp.sim.util import tiny_png

PNG = tiny_png()


pytestmark = pytest.mark.usefixtures("clean_env")  # settings from their defaults only


# -- which addresses are public ---------------------------------------------------------------------
@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "192.0.2.1", "198.18.0.1", "224.0.0.1", "240.0.0.1", "255.255.255.255",
    "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1", "2001:db8::1",
    "::ffff:8.8.8.8", "::ffff:127.0.0.1",  # IPv4-mapped, even of a public address
    "::8.8.8.8", "::a9fe:a9fe",  # IPv4-compatible
    "64:ff9b::a9fe:a9fe", "64:ff9b::808:808", "64:ff9b:1::1",  # NAT64
    "2002:a9fe:a9fe::1", "2002:808:808::1",  # 6to4
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "not an address", "",
])
def test_non_public_addresses(address):
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "162.159.128.233", "2606:4700:4700::1111",
                                     "2a00:1450:4001:80b::200e"])
def test_public_addresses(address):
    assert is_public_address(address)


@pytest.mark.parametrize("url", ["http://[64:ff9b::7f00:1]:9/a.png", "http://[::ffff:7f00:1]:9/a.png",
                                 "http://[::7f00:1]:9/a.png", "http://[2002:7f00:1::1]:9/a.png"])
async def test_ipv6_forms_of_inner_addresses_are_refused_on_the_wire(url):
    async with http_client(load_settings()) as client:
        with pytest.raises(ImageFetchError, match="non-public address"):
            await fetch_image(client, url, 1024)


@pytest.mark.parametrize("proxy", ["", "http://127.0.0.1:9"])
async def test_unresolvable_hosts_are_refused(proxy):
    async with http_client(load_settings(PROXY_URL=proxy)) as client:
        with pytest.raises(ImageFetchError, match="does not resolve"):
            await fetch_image(client, "http://no-such-host.invalid/a.png", 1024)


@pytest.mark.parametrize("proxy", ["", "http://127.0.0.1:9"])
async def test_one_inner_address_among_public_ones_is_refused(monkeypatch, proxy):
    async def resolve(host, port):
        return ["8.8.8.8", "10.0.0.7"]

    monkeypatch.setattr(media, "resolve", resolve)
    async with http_client(load_settings(PROXY_URL=proxy)) as client:
        with pytest.raises(ImageFetchError, match="non-public address"):
            await fetch_image(client, "http://images.example.com/a.png", 1024)


async def _image_server(seen: list[bytes]):
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n" % len(PNG) + PNG)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def test_the_connection_goes_to_the_address_that_was_checked(monkeypatch):
    """`images.test` exists only in our resolver: the download connects to the very address the check
    saw (one lookup, no second one by the HTTP stack), and sends the URL's host as Host."""
    lookups: list[str] = []

    async def resolve(host, port):
        lookups.append(host)
        return ["127.0.0.1"]

    monkeypatch.setattr(media, "resolve", resolve)
    monkeypatch.setattr(media, "is_public_address", lambda a: a == "127.0.0.1")  # this test's "public" net
    seen: list[bytes] = []
    server = await _image_server(seen)
    port = server.sockets[0].getsockname()[1]
    async with server, http_client(load_settings()) as client:
        assert await fetch_image(client, f"http://images.test:{port}/a.png", 1024) == (PNG, "image/png")
    assert lookups == ["images.test"]
    assert f"host: images.test:{port}".encode() in seen[0].lower()


async def test_the_request_budget_is_shared_by_downloads():
    budget = DownloadBudget(total_bytes=len(PNG) * 2 + 10, seconds=30)
    transport = httpx.MockTransport(lambda req: httpx.Response(200, headers={"content-type": "image/png"},
                                                               content=PNG))
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(2):
            await fetch_image(client, "https://cdn.example/x.png", 4096, budget)
        with pytest.raises(ImageFetchError, match="download budget"):
            await fetch_image(client, "https://cdn.example/x.png", 4096, budget)


async def test_downloads_stop_at_the_requests_deadline():
    from cdp.entry.api.images import _download_all
    from cdp.entry.openai.errors import OpenAIError

    release = asyncio.Event()

    async def stall(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        await release.wait()  # answers nothing until the test is over
        writer.close()

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = load_settings(DISCORD_API_BASE=f"http://127.0.0.1:{port}/api/v10", IMAGE_DOWNLOAD_TIMEOUT="0.3")
    async with server:
        with pytest.raises(OpenAIError) as info:
            await _download_all([f"http://127.0.0.1:{port}/a.png"] * 3, settings,
                                DownloadBudget(10**6, settings.IMAGE_DOWNLOAD_TIMEOUT))
        release.set()
    assert info.value.code == "image_download_failed" and "IMAGE_DOWNLOAD_TIMEOUT" in info.value.message


# -- the prompt's caps ---------------------------------------------------------------------------------
def test_split_within_refuses_more_parts_than_allowed():
    assert len(split_within("word " * 1000, "1" * 18, max_parts=3)) == 3
    with pytest.raises(PromptError) as info:
        split_within("word " * 1300, "1" * 18, max_parts=3)
    assert info.value.code == "prompt_too_long"
    with pytest.raises(PromptError):  # far too long: refused without splitting
        split_within(" " * 8_000_000, "1" * 18, max_parts=10)


def test_check_request_size():
    check_request_size([{"role": "user", "content": "x" * 100}] * 3, max_messages=3, max_chars=300)
    with pytest.raises(PromptError) as info:
        check_request_size([{"role": "user", "content": "x"}] * 4, max_messages=3, max_chars=300)
    assert info.value.code == "too_many_messages"
    with pytest.raises(PromptError) as info:
        check_request_size([{"role": "user", "content": [{"type": "text", "text": "x" * 301}]}],
                           max_messages=3, max_chars=300)
    assert info.value.code == "prompt_too_long"


# -- settings -------------------------------------------------------------------------------------------
def test_bounds_settings_defaults():
    s = load_settings()
    assert (s.PROMPT_MAX_PARTS, s.PROMPT_MAX_MESSAGES, s.PROMPT_MAX_CHARS) == (10, 1000, 200_000)
    assert s.max_body_bytes == 25 * 1024 * 1024 * 4 // 3 + 1024 * 1024
    assert load_settings(REQUEST_MAX_BODY_BYTES="5000").max_body_bytes == 5000


@pytest.mark.parametrize("env", [
    {"REQUEST_OUT_TIME": "900"}, {"STREAM_REQUEST_OUT_TIME": "901"},
    {"REQUEST_OUT_TIME": str(MAX_REQUEST_SECONDS), "IMAGE_DOWNLOAD_TIMEOUT": "120"},
    {"IMAGE_DOWNLOAD_TIMEOUT": "600"}, {"PROMPT_MAX_PARTS": "0"},
])
def test_timeouts_stay_below_the_stale_age_and_the_function_timeout(env):
    with pytest.raises(SettingsError):
        load_settings(**env)


def test_max_request_seconds_is_below_every_function_timeout_that_serves_requests():
    from pathlib import Path

    from cdp.domain.housekeeping import STALE_IN_USE_SECONDS

    text = (Path(__file__).resolve().parents[2] / "template.yaml").read_text()
    assert "Timeout: 900" in text  # the stream function: the longest request
    assert MAX_REQUEST_SECONDS + 60 <= 900 and MAX_REQUEST_SECONDS + 120 <= STALE_IN_USE_SECONDS


def test_out_time_header_is_capped():
    from types import SimpleNamespace

    from cdp.entry.api.common import out_time
    from cdp.entry.openai.errors import OpenAIError
    from starlette.requests import Request

    def req(value):
        app = SimpleNamespace(state=SimpleNamespace())
        return Request({"type": "http", "app": app, "headers": [(b"out-time", value.encode())]})

    assert out_time(req(str(MAX_REQUEST_SECONDS))) == MAX_REQUEST_SECONDS
    with pytest.raises(OpenAIError):
        out_time(req(str(MAX_REQUEST_SECONDS + 1)))


# -- interactions ---------------------------------------------------------------------------------------
def test_interactions_refuse_big_bodies_before_the_signature_check():
    from cdp.entry import interactions

    key = "ab" * 32
    big = b"{" + b" " * interactions.MAX_BODY_BYTES + b"}"
    assert interactions.handle(big, {}, public_key=key).status == 413
    assert interactions.handle(b"{}", {}, public_key=key).status == 401


def test_interactions_answer_deep_json_with_400(monkeypatch):
    from cdp.entry import interactions

    monkeypatch.setattr(interactions, "verify_request", lambda *a, **k: None)
    outcome = interactions.handle(b"[" * 100_000 + b"]" * 100_000, {}, public_key="ab" * 32)
    assert outcome.status == 400


# -- TLS through the pinned connection ----------------------------------------------------------------
@pytest.fixture
def tls_trust(monkeypatch):
    """A test CA the download client trusts (instead of the public roots), and the SNI names a TLS
    server on 127.0.0.1 sees."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    original = httpx.create_ssl_context

    def create_ssl_context(*args, **kwargs):
        ctx = original(*args, **kwargs)
        ca.configure_trust(ctx)
        return ctx

    monkeypatch.setattr(media.httpx, "create_ssl_context", create_ssl_context)

    async def resolve(host, port):
        return ["127.0.0.1"]

    monkeypatch.setattr(media, "resolve", resolve)
    monkeypatch.setattr(media, "is_public_address", lambda a: a == "127.0.0.1")  # this test's "public" net
    return ca


async def _tls_image_server(ca, cert_names: list[str], sni: list[str | None]):
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*cert_names).configure_cert(ctx)
    ctx.sni_callback = lambda sock, name, _ctx: sni.append(name)

    async def serve(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n" % len(PNG) + PNG)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx)


async def test_tls_through_the_pinned_address_checks_the_urls_name(tls_trust):
    """Connected to the pinned 127.0.0.1, TLS still sends the URL's host as SNI and checks the
    certificate against it: a certificate for the URL's name passes."""
    sni: list[str | None] = []
    server = await _tls_image_server(tls_trust, ["images.test"], sni)
    port = server.sockets[0].getsockname()[1]
    async with server, http_client(load_settings()) as client:
        assert await fetch_image(client, f"https://images.test:{port}/a.png", 1024) == (PNG, "image/png")
    assert sni == ["images.test"]


@pytest.mark.parametrize("names", [["other.test"], ["127.0.0.1"]])
async def test_tls_refuses_a_certificate_for_another_name_or_the_pinned_ip(tls_trust, names):
    """A certificate valid for another host, or for the pinned IP itself, is refused: the pinning
    never turns the name check into a check of the address."""
    sni: list[str | None] = []
    server = await _tls_image_server(tls_trust, names, sni)
    port = server.sockets[0].getsockname()[1]
    async with server, http_client(load_settings()) as client:
        with pytest.raises(ImageFetchError, match="ConnectError"):
            await fetch_image(client, f"https://images.test:{port}/a.png", 1024)
    assert sni == ["images.test"]
