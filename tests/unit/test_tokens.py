import threading

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
