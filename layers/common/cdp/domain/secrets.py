"""Secrets in logs and messages: a short fingerprint stands for a token wherever one would appear."""

from __future__ import annotations

import hashlib


def fingerprint(token: str | None) -> str:
    """Short, stable, non-reversible id of a token, safe for logs and metric labels."""
    if not token:
        return "tok:none"
    return "tok:" + hashlib.sha256(token.strip().encode()).hexdigest()[:8]


def redact(text: str, *tokens: str | None) -> str:
    """Replace every occurrence of the given tokens in `text` with their fingerprints."""
    for t in tokens:
        if t and len(t) >= 8 and t in text:
            text = text.replace(t, fingerprint(t))
    return text
