"""Inline media in chat messages (collect/validate/replace) and the local blob store."""

from __future__ import annotations

import asyncio
import base64

import pytest
from cdp.adapters.blobs import LocalBlobStore
from cdp.domain.images import MediaError, MediaLimits, collect_inline_media, placeholder_url, replace_media
from cdp.domain.prompt import build_prompt
from cdp.sim.util import tiny_png

PNG = tiny_png()
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
LIMITS = MediaLimits(max_file_bytes=1000, max_total_bytes=1500, max_files=3)


def user(*parts):
    return {"role": "user", "content": list(parts)}


def text(t):
    return {"type": "text", "text": t}


def image(url):
    return {"type": "image_url", "image_url": {"url": url}}


def file(data, filename="notes.txt"):
    return {"type": "file", "file": {"file_data": data, "filename": filename}}


def test_https_urls_are_passed_on_and_data_urls_collected():
    msgs = [user(text("what is this?"), image("https://example.com/a.png"), image(PNG_URL),
                 file(base64.b64encode(b"hello").decode()))]
    items = collect_inline_media(msgs, all_dialog=False, limits=LIMITS)
    assert [(i.kind, i.part_index, i.content_type, i.filename) for i in items] == [
        ("image", 2, "image/png", "image-0-2.png"), ("file", 3, "text/plain", "notes.txt")]
    assert items[0].data == PNG


def test_only_the_prompts_messages_are_looked_at():
    older = user(text("old"), image(PNG_URL))
    msgs = [older, {"role": "assistant", "content": "ok"}, user(text("new"))]
    assert collect_inline_media(msgs, all_dialog=False, limits=LIMITS) == []
    assert len(collect_inline_media(msgs, all_dialog=True, limits=LIMITS)) == 1


@pytest.mark.parametrize("part,match", [
    (image("data:image/png;base64,@@@notbase64"), "not valid base64"),
    (image("data:image/png," + "abc"), "base64"),
    (image("data:image/png;base64," + base64.b64encode(b"MZ not an image").decode()), "not a PNG"),
    (image("ftp://example.com/a.png"), "http"),
    (image("data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"x" * 2000).decode()),
     "limit"),
    (file(base64.b64encode(b"MZ\x90\x00binary").decode(), "tool.exe"), "unsupported type"),
    ({"type": "file", "file": {"file_id": "file-abc"}}, "file_id is not supported"),
    ({"type": "file", "file": {"filename": "x.txt"}}, "file_data"),
])
def test_bad_inline_media(part, match):
    with pytest.raises(MediaError, match=match) as info:
        collect_inline_media([user(text("hi"), part)], all_dialog=False, limits=LIMITS)
    assert info.value.param.startswith("messages[0].content[1]")


def test_total_and_count_limits():
    small = "data:image/png;base64," + base64.b64encode(PNG + b"\x00" * (700 - len(PNG))).decode()
    with pytest.raises(MediaError, match="total") as info:
        collect_inline_media([user(image(small), image(small), image(small))], all_dialog=False, limits=LIMITS)
    assert info.value.code == "file_too_large"
    with pytest.raises(MediaError, match="at most 3"):
        collect_inline_media([user(*[image(PNG_URL)] * 4)], all_dialog=False, limits=LIMITS)


def test_replace_media_makes_the_prompt_text_parts_then_urls():
    msgs = [user(text("describe both"), image(PNG_URL), file("data:text/plain;base64,aGk=", "a.txt"))]
    items = collect_inline_media(msgs, all_dialog=False, limits=LIMITS)
    urls = {(i.message_index, i.part_index): f"https://cdn.discordapp.com/attachments/1/2/{i.filename}" for i in items}
    out = replace_media(msgs, urls)
    assert msgs[0]["content"][1]["image_url"]["url"] == PNG_URL  # the input is not mutated
    assert build_prompt(out, all_dialog_record=False) == (
        "describe both\nhttps://cdn.discordapp.com/attachments/1/2/image-0-1.png\n"
        "https://cdn.discordapp.com/attachments/1/2/a.txt")
    preview = replace_media(msgs, {(i.message_index, i.part_index): placeholder_url(i) for i in items})
    assert "base64" not in build_prompt(preview, all_dialog_record=True)


def test_image_only_message_makes_a_prompt():
    msgs = [user(image(PNG_URL))]
    items = collect_inline_media(msgs, all_dialog=False, limits=LIMITS)
    out = replace_media(msgs, {(0, 0): placeholder_url(items[0])})
    assert build_prompt(out, all_dialog_record=False).startswith("https://cdn.discordapp.com/attachments/")


def test_local_blob_store(tmp_path):
    store = LocalBlobStore(tmp_path / "files")
    url = asyncio.run(store.put(PNG, "image/png"))
    name = url.removeprefix("/files/")
    assert url.startswith("/files/") and len(name) == 36 and name.endswith(".png")
    path, mime = store.locate(name)
    assert path.read_bytes() == PNG and mime == "image/png"
    assert store.locate("../" + name) is None
    assert store.locate("0" * 32 + ".png") is None
    assert store.locate(name.replace(".png", ".html")) is None
    assert not [p for p in (tmp_path / "files").iterdir() if p.name.startswith(".tmp")]
    with pytest.raises(ValueError):
        asyncio.run(store.put(b"<html>", "text/html"))


def _client(handler):
    import httpx

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize("status,ctype,body,problem", [
    (200, "image/png", PNG, None),
    (200, "application/octet-stream", PNG, None),
    (404, "text/plain", b"gone", "HTTP 404"),
    (200, "text/html", b"<html>", "not an image"),
    (200, "image/png", b"<html>not really</html>", "not a PNG"),
    (200, "image/png", PNG + b"\x00" * 5000, "too large"),
])
def test_fetch_image(status, ctype, body, problem):
    import httpx
    from cdp.adapters.media import ImageFetchError, fetch_image

    async def run():
        async with _client(lambda req: httpx.Response(status, headers={"content-type": ctype}, content=body)) as c:
            return await fetch_image(c, "https://cdn.example/x.png", max_bytes=4096)

    if problem is None:
        assert asyncio.run(run()) == (body, "image/png")
    else:
        with pytest.raises(ImageFetchError, match=problem):
            asyncio.run(run())


async def test_local_blob_store_prunes_only_its_own_old_files(tmp_path):
    import os
    import time as _time

    from cdp.adapters.blobs import LocalBlobStore

    store = LocalBlobStore(tmp_path)
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
    old_url, new_url = await store.put(png, "image/png"), await store.put(png, "image/png")
    old = tmp_path / old_url.rsplit("/", 1)[1]
    stranger = tmp_path / "notes.txt"
    stranger.write_text("not ours")
    week_ago = _time.time() - 7 * 86400
    os.utime(old, (week_ago, week_ago))
    os.utime(stranger, (week_ago, week_ago))
    assert await store.prune(_time.time() - 86400) == 1
    assert not old.exists() and stranger.exists()
    assert await store.get(new_url.rsplit("/", 1)[1]) is not None


async def test_image_downloads_refuse_non_public_addresses_but_trust_the_discord_host():
    import pytest as _pytest
    from cdp.adapters.media import ImageFetchError, fetch_image, http_client
    from cdp.settings import load_settings

    settings = load_settings(DISCORD_API_BASE="http://discord.example.invalid/api/v10")
    async with http_client(settings) as client:
        for url in ("http://127.0.0.1:9/a.png", "http://169.254.169.254/latest/meta-data",
                    "http://[::1]:9/a.png", "http://10.1.2.3/a.png"):
            with _pytest.raises(ImageFetchError, match="non-public address"):
                await fetch_image(client, url, 1024)
    # The Discord API host (a local mirror, or the test fake) is trusted: the request is attempted.
    trusted = load_settings(DISCORD_API_BASE="http://127.0.0.1:9/api/v10")
    async with http_client(trusted) as client:
        with _pytest.raises(ImageFetchError, match="download failed"):
            await fetch_image(client, "http://127.0.0.1:9/a.png", 1024)
    # Through a proxy the check stays: what the proxy would be asked to reach is checked first.
    proxied = load_settings(PROXY_URL="http://127.0.0.1:9")
    async with http_client(proxied) as client:
        with _pytest.raises(ImageFetchError, match="non-public address"):
            await fetch_image(client, "http://10.1.2.3/a.png", 1024)
