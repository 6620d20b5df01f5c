"""PROXY_URL: http and socks5 proxies for Discord REST (httpx), image downloads and the Gateway (hikari).

Real proxies on loopback (tests/support/proxies.py) relay to a FakeDiscord. The REST base URL uses a
host name that only the proxies know (FAKE_HOST -> 127.0.0.1 inside the proxy), so a call that went
around the proxy could not even resolve it. The gateway URL the fake hands out is 127.0.0.1 (reachable
directly), so there we compare the fake's count of gateway connections with the proxy's relays whose
first line is `GET /gateway...`. A dead proxy must leave the listener unconnected, never direct.
"""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

import pytest
from cdp.adapters.discord import proxy as proxy_mod
from cdp.adapters.discord.gateway import DiscordListener
from cdp.adapters.discord.recorder import ReplyRecorder
from cdp.adapters.discord.rest import DiscordRest
from cdp.adapters.media import ImageFetchError, fetch_image, http_client
from cdp.adapters.store.memory import MemoryReplyStore
from cdp.domain.discord import DiscordUnavailable
from cdp.sim import FakeDiscord, final_text

from tests.support.proxies import HttpProxy, Socks5Proxy

FAKE_HOST = "discord.proxy-test.invalid"
AUTH = ("cdp-user", "proxy-pass-s3cret")
KINDS = ["http", "http-auth", "socks5", "socks5h-auth"]


@pytest.fixture(scope="module")
def fd(fake: FakeDiscord) -> FakeDiscord:
    return fake


@pytest.fixture(scope="module")
def proxies():
    hosts = {FAKE_HOST: "127.0.0.1"}
    ps = {
        "http": HttpProxy(hosts),
        "http-auth": HttpProxy(hosts, auth=AUTH),
        "socks5": Socks5Proxy(hosts),
        "socks5h-auth": Socks5Proxy(hosts, auth=AUTH),
    }
    for p in ps.values():
        p.start()
    yield ps
    for p in ps.values():
        p.stop()


def proxy_url(proxies, kind: str) -> str:
    return proxies[kind].url("socks5h" if kind == "socks5h-auth" else None)


def api_base(fd) -> str:
    return f"http://{FAKE_HOST}:{fd.port}/api/v10"


def user_token(fd) -> str:
    return next(iter(fd.config.user_tokens))


async def wait_state(lst: DiscordListener, pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not pred(lst.status):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        await lst.status.wait_change(min(left, 0.2))
    return True


@pytest.mark.parametrize("kind", KINDS)
async def test_rest_goes_through_the_proxy(fd, proxies, kind):
    proxy = proxies[kind]
    before = len(proxy.relays_to(fd.port))
    async with DiscordRest(api_base=api_base(fd), bot_token=fd.config.bot_token,
                           proxy_url=proxy_url(proxies, kind)) as rest:
        me = await rest.get_current_user()
        assert me["id"] == fd.config.bot_user_id
        gw = await rest.get_gateway_bot()
        assert gw["url"].startswith("ws://")
        coze = fd.config.coze_bot_ids[0]
        msg = await rest.send_user_message(user_token(fd), fd.config.channel_id, f"hi <@{coze}>",
                                           nonce=str(time.time_ns()), allowed_user_ids=[coze])
        assert msg["id"]
    relays = proxy.relays_to(fd.port)[before:]
    assert relays and all(r.host == FAKE_HOST for r in relays)
    assert any("/api/v10/users/@me" in r.first_line for r in relays)
    assert proxy.refused == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_image_download_goes_through_the_proxy(fd, proxies, kind):
    proxy = proxies[kind]
    before = len(proxy.relays_to(fd.port))
    # The fake serves its CDN on the Discord API host, which is trusted (a mirror may be local);
    # any other host is checked here before the proxy is asked for it (cdp.adapters.media).
    settings = SimpleNamespace(PROXY_URL=proxy_url(proxies, kind), USER_AGENT="cdp-test",
                               DISCORD_API_BASE=api_base(fd))
    async with http_client(settings) as client:
        data, mime = await fetch_image(client, f"http://{FAKE_HOST}:{fd.port}/cdn/a.png", 1 << 20)
        for url in (f"http://127.0.0.1:{fd.port}/cdn/a.png", f"http://cdn.proxy-test.invalid:{fd.port}/cdn/a.png"):
            with pytest.raises(ImageFetchError, match="non-public address|does not resolve"):
                await fetch_image(client, url, 1 << 20)
    assert mime == "image/png" and data.startswith(b"\x89PNG")
    assert [r.first_line for r in proxy.relays_to(fd.port)[before:]] == ["GET /cdn/a.png HTTP/1.1"]


@pytest.mark.parametrize("kind", KINDS)
async def test_gateway_goes_through_the_proxy(fd, proxies, kind):
    proxy = proxies[kind]
    url = proxy_url(proxies, kind)
    before_relays = len(proxy.relays_to(fd.port))
    before_conns = fd.gateway_connections()
    store = MemoryReplyStore()
    coze = fd.config.coze_bot_ids[0]
    recorder = ReplyRecorder(store, set(fd.config.coze_bot_ids), fd.config.guild_id)
    lst = DiscordListener(api_base=api_base(fd), bot_token=fd.config.bot_token, recorder=recorder,
                          proxy_url=url)
    rest = DiscordRest(api_base=api_base(fd), bot_token=fd.config.bot_token, proxy_url=url)
    await lst.start()
    try:
        assert await lst.wait_ready(15), lst.status
        content = f"What is the capital of France? ({kind}) <@{coze}>"
        msg = await rest.send_user_message(user_token(fd), fd.config.channel_id, content,
                                           nonce=str(time.time_ns()), allowed_user_ids=[coze])
        want = final_text(content, fd.url)
        deadline = time.monotonic() + 15
        snap = await store.snapshot(msg["id"])
        while "".join(m.content for m in snap.messages) != want and time.monotonic() < deadline:
            snap = await store.wait_for_change(msg["id"], snap.revision, deadline - time.monotonic())
        assert "".join(m.content for m in snap.messages) == want
    finally:
        await lst.stop()
        await rest.aclose()
    relays = proxy.relays_to(fd.port)[before_relays:]
    gateway = [r for r in relays if r.first_line.startswith("GET /gateway?")]
    opened = fd.gateway_connections() - before_conns
    assert opened >= 1 and len(gateway) == opened  # every gateway connection came through the proxy
    assert all(r.host == "127.0.0.1" for r in gateway)
    # hikari's own REST call (GET /gateway/bot, Authorization: Bot ...) used the proxy's name too
    assert any(r.host == FAKE_HOST and r.first_line.startswith("GET /api/v10/gateway/bot") for r in relays)
    assert proxy.refused == 0


@pytest.mark.parametrize("scheme", ["http", "socks5"])
async def test_dead_proxy_never_connects_directly(fd, scheme):
    # The fake is reachable directly at 127.0.0.1; the proxy is not there at all.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed again when the block ends: connections are refused
    before_conns = fd.gateway_connections()
    before_log = len(fd.request_log())
    lst = DiscordListener(api_base=fd.base_url, bot_token=fd.config.bot_token, proxy_url=f"{scheme}://127.0.0.1:{dead}",
                          recorder=ReplyRecorder(MemoryReplyStore(), set(fd.config.coze_bot_ids)))
    await lst.start()
    try:
        # a direct connection would reach the fake within milliseconds; hikari retries an unreachable
        # http proxy for ~8 s before giving up (socks fails at once): look for 1.5 s
        await wait_state(lst, lambda st: "reconnecting" in st.detail, 1.5)
        assert not lst.status.ready and "proxy" in lst.status.detail.lower()
    finally:
        await lst.stop()
    assert fd.gateway_connections() == before_conns
    assert len(fd.request_log()) == before_log
    async with DiscordRest(api_base=fd.base_url, bot_token=fd.config.bot_token,
                           proxy_url=f"{scheme}://127.0.0.1:{dead}", transient_backoff=0.01) as rest:
        with pytest.raises(DiscordUnavailable):
            await rest.get_current_user()
    assert len(fd.request_log()) == before_log


async def _fails_fast(fd, proxy: str) -> DiscordListener:
    before_log = len(fd.request_log())
    lst = DiscordListener(api_base=fd.base_url, bot_token=fd.config.bot_token, proxy_url=proxy,
                          recorder=ReplyRecorder(MemoryReplyStore(), set(fd.config.coze_bot_ids)))
    await lst.start()
    try:
        assert not await lst.wait_ready(5)
        assert lst.status.failed, lst.status
    finally:
        await lst.stop()
    assert len(fd.request_log()) == before_log  # not even GET /gateway/bot went out
    return lst


async def test_unsupported_proxy_scheme_fails_fast(fd):
    lst = await _fails_fast(fd, "socks4://127.0.0.1:1080")
    assert "'socks4' is not supported" in lst.status.detail and "socks5://" in lst.status.fix


async def test_socks_without_aiohttp_socks_fails_fast(fd, monkeypatch):
    monkeypatch.setattr(proxy_mod, "_socks_settings_cls", None)
    monkeypatch.setitem(sys.modules, "aiohttp_socks", None)  # import fails
    lst = await _fails_fast(fd, "socks5://127.0.0.1:1080")
    assert "aiohttp-socks is not installed" in lst.status.detail


async def test_socks_with_unknown_hikari_fails_fast(fd, monkeypatch):
    import hikari

    monkeypatch.setattr(proxy_mod, "_socks_settings_cls", None)
    monkeypatch.setattr(hikari, "__version__", "3.0.0")
    lst = await _fails_fast(fd, "socks5://u:pw-secret-123@127.0.0.1:1080")
    assert "hikari 3.0.0" in lst.status.detail and "http://" in lst.status.fix
    assert "pw-secret-123" not in repr(lst.status)


def test_proxy_label_hides_credentials():
    assert proxy_mod.proxy_label("socks5h://u:secret@proxy.local:1080") == "socks5h://proxy.local:1080"


async def test_hook_leaves_other_bots_alone():
    """The SOCKS seam only changes bots built with the SOCKS settings; a plain one gets hikari's own."""
    import aiohttp
    from aiohttp_socks import ProxyConnector
    from hikari.impl import config as hconfig
    from hikari.internal import net

    socks = proxy_mod.hikari_proxy_kwargs("socks5://127.0.0.1:1080")["http_settings"]
    plain = net.create_tcp_connector(hconfig.HTTPSettings())
    proxied = net.create_tcp_connector(socks, dns_cache=False)
    try:
        assert type(plain) is aiohttp.TCPConnector
        assert isinstance(proxied, ProxyConnector)
        assert "127.0.0.1:1080" not in repr(socks)  # the URL (maybe with credentials) is not in its repr
    finally:
        await plain.close()
        await proxied.close()
    assert proxy_mod.hikari_proxy_kwargs(None) == {}
    assert proxy_mod.hikari_proxy_kwargs("http://127.0.0.1:3128")["proxy_settings"].url == "http://127.0.0.1:3128"

