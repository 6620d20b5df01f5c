"""Schemathesis over the /openapi.json of a running `cdp serve` (the fake Discord, a fast Coze).

Every operation the document lists is called with bodies, paths, queries and headers generated from
its schema (valid and invalid ones), with the admin key (so the routes get past the key check; the
key checks have their own tests). Checked on every answer:
- no status >= 500 (a 502/503 is an upstream's answer, never the proxy's own failure: the fake
  Discord never fails here, so any 5xx is a defect);
- every 4xx under /v1 is in the OpenAI error shape: {"error": {"message", "type", "param", "code"}},
  a non-empty message string.

Bounded for `make test` (CDP_FUZZ_EXAMPLES examples per operation, default 10); `make soak` runs it
with more.
"""

from __future__ import annotations

import json
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core import NOT_SET

from tests.fuzz.served import ADMIN_KEY, SIGNER
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("CDP_FUZZ_EXAMPLES", "10"))


def openai_error_problem(body: object) -> str | None:
    """Why `body` is not {"error": {"message": str, "type": str, "param": str|None, "code": str|None}}."""
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return "the body is not {\"error\": {...}}"
    err = body["error"]
    missing = {"message", "type", "param", "code"} - set(err)
    if missing:
        return f"error lacks {sorted(missing)}"
    if not isinstance(err["message"], str) or not err["message"]:
        return "error.message is not a non-empty string"
    if not isinstance(err["type"], str):
        return "error.type is not a string"
    for key in ("param", "code"):
        if err[key] is not None and not isinstance(err[key], str):
            return f"error.{key} is neither a string nor null"
    return None


def check_answer(path: str, status: int, body_text: str, content_type: str) -> None:
    assert status < 500, f"{path} answered {status}: {body_text[:500]}"
    if path.startswith("/v1") and 400 <= status < 500:
        assert content_type.startswith("application/json"), f"{path} {status} is {content_type}"
        problem = openai_error_problem(json.loads(body_text))
        assert problem is None, f"{path} {status}: {problem}: {body_text[:500]}"


def fuzz_operation(operation, mode: GenerationMode, base_url: str) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate, Phase.shrink])
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {ADMIN_KEY}", "proxy-secret": ADMIN_KEY}
        if case.path == "/interactions" and case.body is not NOT_SET and case.media_type == "application/json":
            # signed like Discord's, so the fuzzed body gets past the signature check
            body = case.body if isinstance(case.body, bytes) else (
                case.body.encode() if isinstance(case.body, str) else json.dumps(case.body).encode())
            case.body = NOT_SET
            case.headers.update(SIGNER.headers(body))
            response = case.call(base_url=base_url, timeout=30, data=body)
        else:
            response = case.call(base_url=base_url, timeout=30)
        content_type = response.headers.get("content-type") or [""]  # schemathesis: name -> list of values
        try:
            check_answer(case.path, response.status_code, response.text,
                         content_type[0] if isinstance(content_type, list) else content_type)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n  reproduce: {case.as_curl_command()}") from None

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_fuzz_openapi(served: Stack, mode: GenerationMode) -> None:
    """Every operation of /openapi.json, EXAMPLES cases each; all failures are reported together."""
    schema = schemathesis.openapi.from_url(served.url + "/openapi.json")
    failures, operations = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        try:
            fuzz_operation(operation, mode, served.url)
        except Unsatisfiable:  # negative mode: nothing in this operation's schema to get wrong
            continue
        except Exception as exc:  # noqa: BLE001 - each operation's finding is collected
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert operations >= 10, f"only {operations} operations in /openapi.json"
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize(("path", "status", "body", "fails"), [
    ("/v1/models", 500, '{"error": {"message": "x", "type": "server_error", "param": null, "code": null}}', True),
    ("/api/channel/create", 502, '{"success": false}', True),
    ("/v1/chat/completions", 422, '{"detail": [{"loc": ["body"], "msg": "x"}]}', True),
    ("/v1/chat/completions", 400, '{"error": {"message": "", "type": "x", "param": null, "code": null}}', True),
    ("/v1/chat/completions", 400, '{"error": {"message": "m", "type": "x", "code": null}}', True),
    ("/v1/chat/completions", 400, '{"error": {"message": "m", "type": "x", "param": "n", "code": null}}', False),
    ("/api/channel/create", 401, '{"success": false, "message": "m"}', False),
])
def test_the_checks_fail_on_bad_answers(path, status, body, fails) -> None:
    """The fuzzers' checks themselves: a 5xx, or a /v1 4xx not in OpenAI's shape, is a finding."""
    if fails:
        with pytest.raises(AssertionError):
            check_answer(path, status, body, "application/json")
    else:
        check_answer(path, status, body, "application/json")
