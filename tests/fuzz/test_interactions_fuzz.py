"""Hypothesis on the interactions endpoint's parser (cdp.entry.interactions.handle), in process: signed
bodies whose every field is either shaped as Discord documents it or any JSON at all. The HTTP fuzzer
rarely gets a body past the signature check and the type/guild gates at once; here every body is
signed and most are a real /cdp command of GUILD_ID, so the nested fields (data, options, member,
user, permissions) are what varies.

Found by it (each was a 500 from `cdp serve` and the Lambda): `data`, `member` or `member.user` not a
JSON object, `member.permissions` a huge number (1e400 -> inf: OverflowError).
"""

from __future__ import annotations

import json

import pytest
from cdp.entry import interactions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ops.conftest import Signer

GUILD = "1100000000000000001"
SIGNER = Signer()
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=8)


def either(shaped):
    return st.one_of(shaped, JSON)


OPTION = either(st.fixed_dictionaries({"type": either(st.just(1)),
                                       "name": either(st.sampled_from(sorted(interactions.SUBCOMMANDS)))}))
USER = either(st.fixed_dictionaries({"id": either(st.just("1400000000000000001"))}))
INTERACTION = st.fixed_dictionaries(
    {"type": either(st.sampled_from([1, 2, 2, 2])),
     "application_id": either(st.just("1200000000000000001")),
     "token": either(st.just("tok")),
     "guild_id": either(st.just(GUILD))},
    optional={"data": either(st.fixed_dictionaries({"name": either(st.just("cdp")),
                                                    "options": either(st.lists(OPTION, max_size=2))})),
              "member": either(st.fixed_dictionaries({"permissions": either(st.sampled_from(["8", "32", "0"])),
                                                      "user": USER})),
              "user": USER})


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(interaction=INTERACTION)
def test_handle_never_raises(interaction) -> None:
    body = json.dumps(interaction).encode()
    out = interactions.handle(body, SIGNER.headers(body), public_key=SIGNER.public_key, guild_id=GUILD)
    assert out.status in (200, 400), out
    assert isinstance(out.body, dict)
    if out.job is not None:
        assert out.job.command in interactions.SUBCOMMANDS


@pytest.mark.parametrize("interaction", [
    {"type": 2, "data": "x"},
    {"type": 2, "guild_id": GUILD, "member": "x",
     "data": {"name": "cdp", "options": [{"type": 1, "name": "status"}]}},
    {"type": 2, "guild_id": GUILD, "member": {"permissions": "8", "user": "u"},
     "data": {"name": "cdp", "options": [{"type": 1, "name": "status"}]}},
    {"type": 2, "guild_id": GUILD, "member": {"permissions": 1e400},
     "data": {"name": "cdp", "options": [{"type": 1, "name": "status"}]}},
], ids=["data-string", "member-string", "user-string", "permissions-inf"])
def test_malformed_signed_interactions_are_answered(interaction) -> None:
    """Regressions: each of these was an exception (HTTP 500) before."""
    body = json.dumps(interaction).encode()
    out = interactions.handle(body, SIGNER.headers(body), public_key=SIGNER.public_key, guild_id=GUILD)
    assert out.status == 200
    assert out.body["type"] in (4, 5)
