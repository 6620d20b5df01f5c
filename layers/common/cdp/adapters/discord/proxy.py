"""PROXY_URL for the gateway listener: hikari's REST calls (GET /gateway/bot) and every shard go
through the proxy, or the listener fails (ProxyUnsupported): never a silent direct connection.
http(s):// uses hikari's own ProxySettings; socks5(h):// patches hikari's one connector seam."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit


class ProxyUnsupported(Exception):
    """PROXY_URL cannot be honoured by the gateway connection: the listener fails rather than
    connecting around the proxy."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


_PROXY_SCHEMES_FIX = (
    "PROXY_URL must be http://host:port, https://host:port, socks5://host:port or socks5h://host:port "
    "(user:password@ allowed)"
)
_socks_settings_cls: Any = None


def proxy_label(proxy_url: str | None) -> str:
    """The proxy without its credentials, for logs and status."""
    if not proxy_url:
        return ""
    u = urlsplit(proxy_url)
    return f"{u.scheme}://{u.hostname}:{u.port}" if u.port else f"{u.scheme}://{u.hostname}"


def hikari_proxy_kwargs(proxy_url: str | None) -> dict[str, Any]:
    """GatewayBot keyword arguments that send hikari's REST calls and websockets through `proxy_url`.

    http(s):// -> hikari's own ProxySettings (aiohttp's HTTP proxy: CONNECT for https/wss).
    socks5:// and socks5h:// -> an aiohttp-socks connector for every connection hikari opens (see
    _install_socks_hook); both let the proxy resolve host names, as httpx does for DiscordRest.
    Raises ProxyUnsupported when the proxy cannot be honoured (never a silent direct connection)."""
    if not proxy_url:
        return {}
    from hikari.impl import config as hconfig

    scheme = urlsplit(proxy_url).scheme.lower()
    if scheme in ("http", "https"):
        return {"proxy_settings": hconfig.ProxySettings(url=proxy_url)}
    if scheme in ("socks5", "socks5h"):
        return {"http_settings": _install_socks_hook()(socks_url=proxy_url)}
    raise ProxyUnsupported(f"PROXY_URL scheme {scheme!r} is not supported by the gateway listener",
                           _PROXY_SCHEMES_FIX)


def _install_socks_hook() -> type:
    """SOCKS for hikari, through its one private seam; returns the HTTPSettings subclass to use.

    hikari (2.x) has no public hook for the aiohttp connector: its REST client (RESTClientImpl.start)
    and each shard's websocket (_GatewayTransport.connect) build theirs with the private
    hikari.internal.net.create_tcp_connector(http_settings). We wrap that function once per process:
    for a bot whose HTTPSettings is our subclass (it carries the SOCKS URL) it returns aiohttp-socks'
    ProxyConnector (a TCPConnector: same settings, every connection through the proxy); for every
    other bot it calls hikari's function unchanged. We first check that this hikari still builds both
    connectors through that function (checked with hikari 2.7); if not, ProxyUnsupported."""
    global _socks_settings_cls
    if _socks_settings_cls is not None:
        return _socks_settings_cls
    import inspect

    import attrs
    import hikari
    from hikari.impl import config as hconfig
    from hikari.impl import rest as hrest
    from hikari.impl import shard as hshard
    from hikari.internal import net

    try:
        from aiohttp_socks import ProxyConnector, ProxyType
    except ImportError:
        raise ProxyUnsupported("PROXY_URL is a SOCKS proxy but aiohttp-socks is not installed",
                               "pip install aiohttp-socks (a dependency of cdp: reinstall the package), "
                               "or use an http:// proxy") from None
    try:
        sources = [inspect.getsource(hrest.RESTClientImpl.start),
                   inspect.getsource(hshard._GatewayTransport.connect)]
        seam_ok = (str(hikari.__version__).startswith("2.") and callable(net.create_tcp_connector)
                   and all("net.create_tcp_connector(" in src and "TCPConnector(" not in src
                           and "ClientSession(" not in src for src in sources))
    except (AttributeError, OSError, TypeError):
        seam_ok = False
    if not seam_ok:
        raise ProxyUnsupported(
            f"PROXY_URL is a SOCKS proxy, which the listener cannot apply to hikari "
            f"{getattr(hikari, '__version__', '?')} (it no longer builds its connections through "
            f"hikari.internal.net.create_tcp_connector)",
            "use an http:// proxy for PROXY_URL, or install hikari 2.7 (pip install 'hikari==2.7.*')")

    @attrs.define(kw_only=True, weakref_slot=False)
    class SocksHTTPSettings(hconfig.HTTPSettings):
        socks_url: str = attrs.field(default="", repr=False)  # may hold credentials

    original = net.create_tcp_connector

    def create_tcp_connector(http_settings: Any, *, dns_cache: bool | int = True) -> Any:
        if not isinstance(http_settings, SocksHTTPSettings):
            return original(http_settings, dns_cache=dns_cache)
        u = urlsplit(http_settings.socks_url)
        return ProxyConnector(
            proxy_type=ProxyType.SOCKS5, host=u.hostname or "", port=u.port or 1080,
            username=unquote(u.username) if u.username else None,
            password=unquote(u.password) if u.password else None,
            rdns=True,  # names are resolved by the proxy, for socks5:// as for socks5h://
            enable_cleanup_closed=http_settings.enable_cleanup_closed,
            force_close=http_settings.force_close_transports,
            limit=http_settings.connection_limit, ssl=http_settings.ssl)

    net.create_tcp_connector = create_tcp_connector
    _socks_settings_cls = SocksHTTPSettings
    return SocksHTTPSettings
