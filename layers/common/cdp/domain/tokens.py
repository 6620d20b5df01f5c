"""Token counting with OpenAI's o200k_base encoding (bpe_openai; offline, loaded lazily once)."""

from __future__ import annotations

import json
import threading
from typing import Any

from cdp.domain.prompt import message_text

__all__ = ["REPLY_PRIMING_TOKENS", "TOKENS_PER_MESSAGE", "count_message_tokens", "count_tokens"]

ENCODING_NAME = "o200k_base"
TOKENS_PER_MESSAGE = 3  # <|start|>{role}<|message|> ... <|end|>
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3  # every reply is primed with <|start|>assistant<|message|>

_lock = threading.Lock()
_encoding: Any = None


def _get_encoding() -> Any:
    global _encoding
    enc = _encoding
    if enc is None:
        with _lock:
            if _encoding is None:
                import bpe_openai

                _encoding = bpe_openai.get_encoding(ENCODING_NAME)
            enc = _encoding
    return enc


def count_tokens(text: str) -> int:
    """Tokens of `text`; special-token strings such as "<|endoftext|>" count as plain text."""
    if not text:
        return 0
    return len(_get_encoding().encode_ordinary(text))


def _value_text(key: str, value: Any) -> str:
    if key == "content":
        return message_text(value)
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def count_message_tokens(messages: list[dict]) -> int:
    """OpenAI's chat accounting: 3 per message + tokens of every field's value (+1 for "name")
    + 3 for the reply priming. Content parts count as their flattened text (image URLs as text)."""
    total = REPLY_PRIMING_TOKENS
    for m in messages or ():
        total += TOKENS_PER_MESSAGE
        if not isinstance(m, dict):
            total += count_tokens(str(m))
            continue
        for key, value in m.items():
            total += count_tokens(_value_text(key, value))
            if key == "name":
                total += TOKENS_PER_NAME
    return total
