import threading

import pytest
from cdp.domain import tokens
from cdp.domain.tokens import count_message_tokens, count_tokens


def test_count_tokens_basic():
    assert count_tokens("") == 0
    assert count_tokens("hello world") == 2
    assert count_tokens("hello world " * 100) > 100
    assert count_tokens("你好，世界") > 0


def test_special_token_text_counts_as_plain_text():
    assert count_tokens("<|endoftext|>") > 1


def test_count_message_tokens_matches_openai_accounting():
    # OpenAI cookbook: 3 per message + content + role, + 3 for the reply priming
    msgs = [{"role": "user", "content": "hello world"}]
    assert count_message_tokens(msgs) == 3 + count_tokens("user") + 2 + 3 == 9
    with_name = [{"role": "user", "name": "bob", "content": "hello world"}]
    assert count_message_tokens(with_name) == 9 + count_tokens("bob") + 1
    assert count_message_tokens([]) == 3


def test_count_message_tokens_parts_and_odd_values():
    msgs = [
        {"role": "system", "content": None},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "describe"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
            ],
        },
        {"role": "assistant", "content": "", "tool_calls": [{"id": "1", "type": "function"}]},
    ]
    n = count_message_tokens(msgs)
    assert n > 3 * 3 + 3 + count_tokens("describe")


def test_lazy_load_is_thread_safe():
    tokens._encoding = None
    results = []
    barrier = threading.Barrier(8)

    def work():
        barrier.wait()
        results.append(count_tokens("hello world"))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [2] * 8
    assert tokens._encoding is not None


def test_vendored_table_is_openais_o200k():
    """The shipped table gives OpenAI's published o200k ids (tiktoken's own test vector)."""
    from cdp.domain.tokens import _get_encoding

    assert _get_encoding().encode_ordinary("hello world") == [24912, 2375]
    assert count_tokens("hello world") == 2


def test_max_tokens_bound_is_an_upper_bound():
    import random

    from cdp.domain.tokens import max_tokens_bound

    rnd = random.Random(7)
    alphabet = "ab c.\n\t😀你好é\u0301<|endoftext|>1234567890"
    samples = ["", "hello world", "你好" * 50, "😀" * 30, " " * 100, "<|endoftext|>"]
    samples += ["".join(rnd.choice(alphabet) for _ in range(rnd.randrange(1, 300))) for _ in range(200)]
    for text in samples:
        assert count_tokens(text) <= max_tokens_bound(text), text


def test_short_prompts_are_counted_only_when_their_usage_is_read():
    from cdp.adapters.store.memory import MemoryHealthStore
    from cdp.app.conversation import ChatSpec, Conversation, ConversationService
    from cdp.app.errors import ServiceError
    from cdp.app.pool import AccountPool
    from cdp.settings import load_settings

    s = load_settings(BOT_TOKEN="b.t", USER_AUTHORIZATION="u.t", GUILD_ID="1100000000000000001",
                      COZE_BOT_ID="1300000000000000001", MESSAGE_MAX_TOKEN="50")
    pool = AccountPool(s.user_tokens, MemoryHealthStore(), tz=s.TZ, reset_time=s.DAILY_RESET_TIME)
    svc = ConversationService(s, rest=None, replies=None, channels=None, pool=pool)
    spec = ChatSpec("r1", "gpt-4o", [{"role": "user", "content": "hello world"}], stream=True)
    prompt, counted = svc.build_prompt(spec)
    assert counted is None  # 11 bytes cannot be more than 50 tokens: no count, no table needed
    conv = Conversation(spec, prompt, counted, "p", "c", False, svc)
    assert conv.prompt_tokens == count_tokens(prompt) == conv.counted_prompt_tokens
    # Over the byte bound: counted exactly, so a prompt of few long tokens still passes...
    long_words = ChatSpec("r2", "gpt-4o", [{"role": "user", "content": "hello " * 20}], stream=True)
    prompt, counted = svc.build_prompt(long_words)
    assert counted == count_tokens(prompt) <= 50
    # ...and one over the limit is refused with its exact count.
    too_long = ChatSpec("r3", "gpt-4o", [{"role": "user", "content": "hello " * 80}], stream=True)
    with pytest.raises(ServiceError) as err:
        svc.build_prompt(too_long)
    from cdp.domain.prompt import build_prompt

    exact = count_tokens(build_prompt(too_long.messages, s.ALL_DIALOG_RECORD_ENABLE))
    assert f"This prompt is {exact} tokens long" in err.value.message


def test_counting_never_needs_requests():
    """The Lambda layer prunes `requests` (tiktoken's, for remote tables only): counting with the
    bundled table must work without it."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['requests'] = None\n"
            "from cdp.domain.tokens import count_tokens\n"
            "assert count_tokens('hello world, 你好') > 0\n"
            "assert 'charset_normalizer' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
