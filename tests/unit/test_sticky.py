"""The history fingerprint of sticky conversations (cdp.domain.sticky)."""

from __future__ import annotations

from cdp.domain.sticky import (
    StickyConversation,
    answered_fingerprint,
    history_fingerprint,
    least_recently_used,
    named_key,
    split_turn,
)

SYS = {"role": "system", "content": "You are terse."}
U1 = {"role": "user", "content": "What is 2+2?"}
A1 = {"role": "assistant", "content": "4"}
U2 = {"role": "user", "content": "And 3+3?"}


def fp(messages, key="sk-1", model="gpt-4o"):
    return history_fingerprint(messages, key, model)


def test_equal_histories_have_equal_fingerprints_whitespace_and_line_endings_aside():
    assert fp([SYS, U1, A1]) == fp([dict(SYS), {"role": "user", "content": "  What is 2+2?\n"},
                                    {"role": "assistant", "content": "4\r\n"}])
    a = fp([{"role": "user", "content": "a\r\nb"}])
    assert a == fp([{"role": "user", "content": "a\nb"}])


def test_text_parts_count_as_the_same_text():
    parts = {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]}
    assert fp([parts]) == fp([U1])


def test_any_change_of_content_role_order_or_tool_calls_changes_the_fingerprint():
    base = fp([SYS, U1, A1])
    assert fp([SYS, U1, {"role": "assistant", "content": "5"}]) != base  # edited answer
    assert fp([SYS, {"role": "user", "content": "What is 2+3?"}, A1]) != base  # edited question
    assert fp([U1, A1]) != base  # system prompt dropped
    assert fp([SYS, A1, U1]) != base
    assert fp([SYS, U1, {**A1, "role": "user"}]) != base
    call = {**A1, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    assert fp([SYS, U1, call]) != base
    image = {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"},
                                         {"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}
    assert fp([SYS, image, A1]) != base


def test_scoped_to_key_and_model():
    assert fp([U1, A1], key="sk-1") != fp([U1, A1], key="sk-2")
    assert fp([U1, A1], model="gpt-4o") != fp([U1, A1], model="other")


def test_the_answer_given_is_the_next_turns_history():
    after_turn_1 = answered_fingerprint([SYS, U1], "4", "sk-1", "gpt-4o")
    turn_2 = split_turn([SYS, U1, A1, U2])
    assert fp(turn_2.history) == after_turn_1
    assert answered_fingerprint([SYS, U1], "5", "sk-1", "gpt-4o") != after_turn_1


def test_split_turn_and_what_counts_as_a_dialog():
    t = split_turn([SYS, U1])
    assert t.new == U1 and t.history == [SYS] and not t.is_dialog
    assert split_turn([SYS, U1, A1, U2]).is_dialog
    assert split_turn([SYS, U1, A1]) is None  # does not end with a user turn
    assert split_turn([U1, {"role": "tool", "content": "{}", "tool_call_id": "c1"}]) is None
    assert split_turn([]) is None


def test_named_keys_are_scoped_hashes_never_the_name():
    k = named_key("alice@example.com", "sk-1", "gpt-4o")
    assert "alice" not in k and k.startswith("n-")
    assert k == named_key("alice@example.com", "sk-1", "gpt-4o")
    assert k != named_key("alice@example.com", "sk-2", "gpt-4o")
    assert k != named_key("bob", "sk-1", "gpt-4o")
    assert fp([U1]).startswith("h-") and len(fp([U1])) == 42


def test_least_recently_used_skips_leased_and_puts_expired_first():
    def c(key, last, expires, lease=0.0):
        return StickyConversation(key, "1", "2", "", last, expires, "req" if lease else "", lease)

    convs = [c("new", 90, 200), c("old", 10, 200), c("busy", 5, 200, lease=150), c("gone", 50, 60)]
    assert [x.key for x in least_recently_used(convs, now=100)] == ["gone", "old", "new"]


def test_settings_default_to_fresh_and_bound_the_budget(clean_env):
    import pytest
    from cdp.settings import Settings
    from pydantic import ValidationError

    s = Settings()
    assert s.CONVERSATION_MODE == "fresh" and s.CONVERSATION_IDLE_TTL == 1800
    assert s.CONVERSATION_CHANNEL_BUDGET < 500  # Discord's channel limit per guild
    assert Settings(CONVERSATION_MODE="sticky").CONVERSATION_MODE == "sticky"
    for bad in ({"CONVERSATION_MODE": "forever"}, {"CONVERSATION_IDLE_TTL": 0},
                {"CONVERSATION_CHANNEL_BUDGET": 500}):
        with pytest.raises(ValidationError):
            Settings(**bad)
