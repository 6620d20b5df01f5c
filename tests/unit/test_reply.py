from datetime import UTC, datetime

import pytest
from cdp.domain.coze import SERVICE_TEXTS, USER_LIMIT_TEXTS, CozeErrorKind
from cdp.domain.model import ReplyMessage, ReplySnapshot
from cdp.domain.reply import (
    ReplyView,
    merge_message,
    parse_timestamp_us,
    render,
    to_reply_message,
    version_of,
)

COZE = "1111111111111111111"
OTHER = "2222222222222222222"
PROMPT = "3333333333333333333"
CHAN = "4444444444444444444"


def raw_msg(mid="5000000000000000001", **kw):
    d = {
        "id": mid,
        "channel_id": CHAN,
        "author": {"id": COZE, "username": "Coze", "bot": True},
        "content": "Hello",
        "timestamp": "2024-02-01T12:00:00.000000+00:00",
        "edited_timestamp": None,
        "embeds": [],
        "attachments": [],
        "components": [],
        "message_reference": {"message_id": PROMPT, "channel_id": CHAN, "guild_id": "9"},
        "type": 19,
    }
    d.update(kw)
    return d


# ---------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    "iso,us",
    [
        ("1970-01-01T00:00:00+00:00", 0),
        ("1970-01-01T00:00:01.5+00:00", 1_500_000),
        ("1970-01-01T00:00:00.000001+00:00", 1),
        ("1970-01-01T00:00:00.123456789+00:00", 123456),
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T01:00:00+01:00", 0),
        ("1970-01-01T00:00:02", 2_000_000),
        ("2024-02-01T12:34:56.789000+00:00", 1706790896789000),
        ("2024-02-01T12:34:56+00:00", 1706790896000000),
    ],
)
def test_parse_timestamp_us(iso, us):
    assert parse_timestamp_us(iso) == us


@pytest.mark.parametrize("bad", ["", "yesterday", "2024-02-01T12:34:56.+00:00", None, 12])
def test_parse_timestamp_rejects(bad):
    with pytest.raises((ValueError, TypeError)):
        parse_timestamp_us(bad)


def test_version_of():
    created = "2024-02-01T12:00:00.000000+00:00"
    edited = "2024-02-01T12:00:01.250000+00:00"
    assert version_of({"timestamp": created}) == parse_timestamp_us(created)
    assert version_of({"timestamp": created, "edited_timestamp": None}) == parse_timestamp_us(created)
    assert version_of({"timestamp": created, "edited_timestamp": edited}) == parse_timestamp_us(edited)
    assert version_of({"edited_timestamp": edited}) == parse_timestamp_us(edited)
    assert version_of({"timestamp": created, "edited_timestamp": "garbage"}) == parse_timestamp_us(created)
    assert version_of({}) is None
    assert version_of({"timestamp": "garbage"}) is None
    # later edits have larger versions
    assert version_of({"edited_timestamp": "2024-02-01T12:00:01.250001+00:00"}) > version_of(
        {"edited_timestamp": edited}
    )


# ---------------------------------------------------------------- merge


def test_merge_partial_update_keeps_absent_keys():
    prev = raw_msg(content="Hello wor", embeds=[{"image": {"url": "https://a"}}])
    upd = {"id": prev["id"], "channel_id": CHAN, "embeds": []}
    merged = merge_message(prev, upd)
    assert merged["content"] == "Hello wor"
    assert merged["embeds"] == []
    assert merged["author"] == prev["author"]
    assert prev["embeds"] == [{"image": {"url": "https://a"}}]  # inputs untouched
    assert merged is not prev


def test_merge_present_null_replaces_and_none_prev():
    prev = raw_msg(edited_timestamp="2024-02-01T12:00:01+00:00")
    assert merge_message(prev, {"edited_timestamp": None})["edited_timestamp"] is None
    upd = {"id": "1", "content": "x"}
    m = merge_message(None, upd)
    assert m == upd and m is not upd


def test_merge_then_convert_full_update():
    prev = raw_msg(content="Hel")
    upd = raw_msg(content="Hello world", edited_timestamp="2024-02-01T12:00:03+00:00")
    m = to_reply_message(merge_message(prev, upd), {COZE})
    assert m.content == "Hello world"
    assert m.version == parse_timestamp_us("2024-02-01T12:00:03+00:00")


# ---------------------------------------------------------------- to_reply_message


def test_to_reply_message_basic():
    m = to_reply_message(raw_msg(), {COZE})
    assert m == ReplyMessage(
        message_id="5000000000000000001",
        prompt_id=PROMPT,
        channel_id=CHAN,
        author_id=COZE,
        content="Hello",
        version=parse_timestamp_us("2024-02-01T12:00:00+00:00"),
    )


def test_to_reply_message_rejects_other_authors_and_unknown_prompt():
    assert to_reply_message(raw_msg(author={"id": OTHER}), {COZE}) is None
    assert to_reply_message(raw_msg(author={"id": OTHER}), {COZE}, prompt_id=PROMPT) is None
    assert to_reply_message(raw_msg(message_reference=None), {COZE}) is None
    assert to_reply_message(raw_msg(id=None), {COZE}) is None
    assert to_reply_message("nope", {COZE}) is None  # type: ignore[arg-type]


def test_to_reply_message_prompt_id_fallbacks():
    m = to_reply_message(raw_msg(message_reference=None), {COZE}, prompt_id="77")
    assert m.prompt_id == "77"
    m = to_reply_message(raw_msg(message_reference=None, referenced_message={"id": "88"}), {COZE})
    assert m.prompt_id == "88"
    # message_reference wins over the argument
    assert to_reply_message(raw_msg(), {COZE}, prompt_id="77").prompt_id == PROMPT
    # integer author ids in the set still match
    assert to_reply_message(raw_msg(), {int(COZE)}) is not None  # type: ignore[arg-type]


def test_to_reply_message_without_author_needs_prompt_id():
    partial = {"id": "5000000000000000001", "channel_id": CHAN, "content": "Hi"}
    assert to_reply_message(partial, {COZE}) is None
    m = to_reply_message(partial, {COZE}, prompt_id=PROMPT, fallback_version=42)
    assert m.prompt_id == PROMPT and m.author_id == "" and m.version == 42 and m.content == "Hi"
    assert to_reply_message(partial, {COZE}, prompt_id=PROMPT).version == 0


def test_version_prefers_timestamps_over_fallback():
    m = to_reply_message(raw_msg(edited_timestamp="2024-02-01T12:00:05+00:00"), {COZE}, fallback_version=1)
    assert m.version == parse_timestamp_us("2024-02-01T12:00:05+00:00")
    m = to_reply_message(raw_msg(timestamp=None), {COZE}, fallback_version=0)
    assert m.version == 0


def test_image_urls_order_and_dedup():
    raw = raw_msg(
        embeds=[
            {
                "image": {"url": "https://e/1.png", "proxy_url": "https://p/1.png"},
                "thumbnail": {"url": "https://e/t1.png"},
            },
            {"thumbnail": {"url": "https://e/t2.png"}},
            {"title": "no image"},
            {"image": {"url": "https://e/1.png"}},
            "junk",
        ],
        attachments=[
            {"id": "1", "url": "https://cdn/a.png", "proxy_url": "https://media/a.png"},
            {"id": "2", "proxy_url": "https://media/b.png"},
            {"id": "3"},
            {"id": "4", "url": "https://e/t2.png"},
        ],
    )
    m = to_reply_message(raw, {COZE})
    assert m.image_urls == ("https://e/1.png", "https://e/t2.png", "https://cdn/a.png", "https://media/b.png")


def test_suggestions_and_components():
    comps = [
        {
            "type": 1,
            "components": [
                {"type": 2, "style": 1, "label": "Tell me more", "custom_id": "a"},
                {"type": 2, "style": 1, "label": "Why?", "custom_id": "b"},
                {"type": 3, "custom_id": "select", "options": []},
                {"type": 2, "style": 2, "label": "", "custom_id": "c"},
            ],
        },
        {"type": 9, "components": [{"type": 2, "label": "not in an action row"}]},
        {"type": 1, "components": [{"type": 2, "style": 1, "label": "Another", "custom_id": "d"}]},
    ]
    m = to_reply_message(raw_msg(components=comps), {COZE})
    assert m.suggestions == ("Tell me more", "Why?", "Another")
    assert m.has_components
    m2 = to_reply_message(raw_msg(components=[{"type": 1, "components": []}]), {COZE})
    assert m2.suggestions == () and m2.has_components
    assert not to_reply_message(raw_msg(), {COZE}).has_components
    assert not to_reply_message(raw_msg(components=None), {COZE}).has_components


def test_roundtrip_through_dict():
    m = to_reply_message(raw_msg(embeds=[{"image": {"url": "https://e/x"}}]), {COZE})
    assert ReplyMessage.from_dict(m.to_dict()) == m


# ---------------------------------------------------------------- render


def part(mid, content, version=1, **kw):
    return ReplyMessage(mid, PROMPT, CHAN, COZE, content, version, **kw)


def test_render_empty_snapshot():
    v = render(ReplySnapshot(PROMPT))
    assert v == ReplyView("", (), False, None, (), False)


def test_render_joins_parts_in_id_order_without_separator():
    snap = ReplySnapshot(PROMPT, (part("100", "world!"), part("99", "Hello, ")))  # unsorted on purpose
    v = render(snap)
    assert v.text == "Hello, world!"
    assert v.has_text and not v.done_by_buttons and v.error is None


def test_render_numeric_order_of_ids_of_different_length():
    snap = ReplySnapshot(PROMPT, (part("1000", "B"), part("999", "A")))
    assert render(snap).text == "AB"


def test_render_images_appended_unless_present():
    snap = ReplySnapshot.of(
        PROMPT,
        [
            part("1", "Here: ![cat](https://e/cat.png)", image_urls=("https://e/cat.png",)),
            part("2", " and more", image_urls=("https://e/dog.png", "https://e/cat.png")),
        ],
    )
    v = render(snap)
    assert v.text == "Here: ![cat](https://e/cat.png) and more\n![image](https://e/dog.png)"
    assert v.image_urls == ("https://e/cat.png", "https://e/dog.png")


def test_render_image_only_reply_has_text():
    v = render(ReplySnapshot.of(PROMPT, [part("1", "", image_urls=("https://e/a.png", "https://e/b.png"))]))
    assert v.text == "![image](https://e/a.png)\n![image](https://e/b.png)"
    assert v.has_text


def test_render_buttons_and_suggestions_from_last_message_only():
    snap = ReplySnapshot.of(
        PROMPT,
        [
            part("1", "a", suggestions=("old",), has_components=True),
            part("2", "b"),
        ],
    )
    v = render(snap)
    assert not v.done_by_buttons and v.suggestions == ()
    snap2 = ReplySnapshot.of(
        PROMPT, [part("1", "a"), part("2", "b", suggestions=("s1", "s2"), has_components=True)]
    )
    v2 = render(snap2)
    assert v2.done_by_buttons and v2.suggestions == ("s1", "s2")


def test_render_whitespace_only_has_no_text():
    assert not render(ReplySnapshot.of(PROMPT, [part("1", " \n ")])).has_text


@pytest.mark.parametrize("text", [USER_LIMIT_TEXTS[1], SERVICE_TEXTS[0]])
def test_render_error_whole_reply_only(text):
    v = render(ReplySnapshot.of(PROMPT, [part("1", text)]))
    assert v.error is not None and v.error.text == text
    # a long answer split over two messages that *ends* with an error-like sentence is not an error
    v2 = render(ReplySnapshot.of(PROMPT, [part("1", "Answer. "), part("2", text)]))
    assert v2.error is None


def test_render_error_split_over_parts_is_still_error():
    t = USER_LIMIT_TEXTS[1]
    v = render(ReplySnapshot.of(PROMPT, [part("1", t[:20]), part("2", t[20:])]))
    assert v.error.kind == CozeErrorKind.USER_LIMIT


def test_discord_timestamps_parse_like_every_other_spelling():
    """The fast path for Discord's own form gives what the general parser gives for the same instant."""
    import random

    rnd = random.Random(3)
    for _ in range(300):
        us = rnd.randrange(0, 4_000_000_000 * 1_000_000)
        secs, frac = divmod(us, 1_000_000)
        base = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        discord = f"{base}.{frac:06d}+00:00"
        assert parse_timestamp_us(discord) == parse_timestamp_us(f"{base}.{frac:06d}000Z") == us
        assert parse_timestamp_us(f"{base}+00:00") == secs * 1_000_000
    # Non-ASCII digits never take the fast path (nor parse).
    with pytest.raises(ValueError):
        parse_timestamp_us("٢٠٢٤-02-01T12:34:56.789000+00:00")
