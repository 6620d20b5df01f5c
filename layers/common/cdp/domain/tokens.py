"""Token counting with OpenAI's o200k_base encoding, offline.

tiktoken does the encoding; its BPE table ships with this package (cdp/data/o200k_base.tiktoken.gz,
sha256 of the unzipped file = OpenAI's published 446a9538…), because tiktoken would otherwise download
it on first use, which fails without egress. Loaded lazily, on the first exact count (~0.5-1 s; ~50 MB
resident once tiktoken's Python copy of the ranks is dropped). `max_tokens_bound` answers "can this
text exceed N tokens?" without it, so a prompt under MESSAGE_MAX_TOKEN by that bound is counted only
when its usage is reported.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
from pathlib import Path
from typing import Any

from cdp.domain.prompt import message_text

__all__ = ["REPLY_PRIMING_TOKENS", "TOKENS_PER_MESSAGE", "count_message_tokens", "count_tokens", "max_tokens_bound",
           "truncate_tokens"]

ENCODING_NAME = "o200k_base"
_TABLE = Path(__file__).resolve().parent.parent / "data" / "o200k_base.tiktoken.gz"
# tiktoken_ext.openai_public.o200k_base's split pattern (copied: that module would download the table).
_O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
_SPECIAL = {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}
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
                import tiktoken

                with gzip.open(_TABLE, "rb") as f:
                    ranks = {base64.b64decode(tok): int(rank)
                             for tok, rank in (line.split() for line in f if line.strip())}
                enc = tiktoken.Encoding(ENCODING_NAME, pat_str=_O200K_PATTERN,
                                        mergeable_ranks=ranks, special_tokens=_SPECIAL)
                # The Rust core holds its own copy of the ranks; the Python dict tiktoken keeps
                # (~22 MB, only used to pickle the Encoding) is dropped.
                if getattr(enc, "_mergeable_ranks", None) is ranks:
                    enc._mergeable_ranks = {}
                del ranks
                _encoding = enc
            enc = _encoding
    return enc


def count_tokens(text: str) -> int:
    """Tokens of `text`; special-token strings such as "<|endoftext|>" count as plain text."""
    if not text:
        return 0
    return len(_get_encoding().encode_ordinary(text))


def truncate_tokens(text: str, limit: int) -> str:
    """The longest prefix of `text` cut at a token boundary (never inside a character) whose own count
    is at most `limit` tokens; `text` itself when it has no more."""
    if limit <= 0 or not text:
        return ""
    if max_tokens_bound(text) <= limit:
        return text
    enc = _get_encoding()
    tokens = enc.encode_ordinary(text)
    n = min(limit, len(tokens))
    while n > 0:
        # A token may end inside a multi-byte character: the partial character is dropped.
        prefix = enc.decode_bytes(tokens[:n]).decode("utf-8", "ignore")
        if count_tokens(prefix) <= limit:  # re-encoding a prefix may merge differently
            return prefix
        n -= 1
    return ""


def max_tokens_bound(text: str) -> int:
    """An upper bound of count_tokens(text) without the table: every o200k token is at least one
    byte of UTF-8, so a text never has more tokens than bytes."""
    return len(text.encode("utf-8", "surrogatepass"))


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
