"""The one redaction (cdp.entry.logs.Redactor) in the log formatters: every secret form, nested extras,
third-party loggers, tracebacks kept, redaction before truncation, and the Lambda (powertools) path."""

from __future__ import annotations

import base64
import io
import json
import logging
from urllib.parse import quote

import pytest
from cdp.domain.secrets import fingerprint
from cdp.entry import logs

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GhIjKl.user-token-secret_value"
KEY = "sk-admin-key-0123456789"
SECRETS = [TOKEN, KEY, "123456:telegram-bot-token"]


def forms(secret: str) -> list[str]:
    raw = secret.encode()
    return [secret, base64.b64encode(raw).decode().rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("="),
            quote(secret, safe="")]


@pytest.fixture
def root_handlers():
    """configure() replaces the root logger's handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved:
        root.addHandler(h)
    root.setLevel(level)
    logs.set_redactor(logs.Redactor())


def test_every_form_of_every_secret_in_nested_values():
    r = logs.Redactor(SECRETS)
    for secret in SECRETS:
        for form in forms(secret):
            out = r.text(f"before {form} after")
            assert form not in out and fingerprint(secret) in out, form
    nested = r.value({"a": [{"b": (TOKEN, 3)}], "c": {KEY: b"x" + KEY.encode()}, "n": None, "i": 1})
    text = json.dumps(nested)
    assert TOKEN not in text and KEY not in text and fingerprint(KEY) in text
    assert nested["n"] is None and nested["i"] == 1
    assert logs.Redactor([]).text(TOKEN) == TOKEN and logs.Redactor(["short"]).text("short") == "short"


def test_a_secret_cut_by_an_earlier_truncation_is_masked_at_either_edge():
    r = logs.Redactor(SECRETS)
    head = ("Discord said: " + TOKEN)[:30]  # a call site's body[:30]
    tail = (TOKEN + " was refused")[-30:]
    assert TOKEN[:16] not in r.text(head) and r.text(head).endswith(fingerprint(TOKEN) + "…")
    assert TOKEN[-16:] not in r.text(tail) and r.text(tail).startswith("…" + fingerprint(TOKEN))
    assert r.text("an ordinary line about sk-") == "an ordinary line about sk-"  # short pieces are words


def record(name: str, msg: str, *args, exc: BaseException | None = None, **extra) -> logging.LogRecord:
    rec = logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args,
                            (type(exc), exc, exc.__traceback__) if exc else None)
    for k, v in extra.items():
        setattr(rec, k, v)
    return rec


def boom() -> BaseException:
    try:
        raise RuntimeError(f"login failed for {TOKEN}")
    except RuntimeError as exc:
        return exc


def test_json_formatter_redacts_message_args_extras_and_traceback_and_keeps_the_record():
    fmt = logs.JsonFormatter(logs.Redactor(SECRETS))
    rec = record("cdp.x", "key %s refused", KEY, exc=boom(), detail={"headers": [f"Bearer {KEY}"]})
    line = fmt.format(rec)
    entry = json.loads(line)
    for secret in SECRETS:
        assert secret not in line
    assert "Traceback" in entry["exc"] and "RuntimeError" in entry["exc"] and fingerprint(TOKEN) in entry["exc"]
    assert entry["detail"] == {"headers": [f"Bearer {fingerprint(KEY)}"]}
    assert rec.exc_info is not None and rec.args == (KEY,)  # other handlers still see the record whole


def test_redaction_comes_before_truncation():
    fmt = logs.JsonFormatter(logs.Redactor(SECRETS))
    msg = "x" * (logs.MAX_FIELD_CHARS - 20) + TOKEN  # a cut first would leave the token's first 20 characters
    entry = json.loads(fmt.format(record("cdp.x", msg)))
    assert TOKEN[:8] not in entry["msg"] and entry["msg"].endswith(fingerprint(TOKEN))
    assert len(entry["msg"]) <= logs.MAX_FIELD_CHARS + 40


def test_recent_errors_buffer_redacts_before_it_cuts(root_handlers):
    from cdp.entry.api import ops

    logs.configure("INFO", SECRETS)
    ops.RECENT_ERRORS.emit(record("cdp.x", "y" * 490 + TOKEN))
    message = ops.RECENT_ERRORS.records[-1]["message"]
    assert TOKEN[:8] not in message and message.startswith("y" * 490)


@pytest.mark.parametrize("name", ["uvicorn.error", "mangum.lifespan", "asyncio", "hikari.gateway", "botocore.auth",
                                  "some.library"])
def test_third_party_loggers_are_redacted(root_handlers, capsys, name):
    logs.configure("INFO", SECRETS)
    logging.getLogger(name).error("sent Authorization: %s / %s", TOKEN, base64.b64encode(KEY.encode()).decode(),
                                  extra={"ctx": {"token": TOKEN}}, exc_info=boom())
    err = capsys.readouterr().err
    assert err.strip(), "nothing was logged"
    for secret in SECRETS:
        for form in forms(secret):
            assert form not in err
    assert "Traceback" in json.loads(err.strip().splitlines()[-1])["exc"]


def test_lambda_powertools_keeps_tracebacks_and_redacts_every_logger(root_handlers):
    from cdp.entry.aws import observability as obs

    obs.configure("INFO", SECRETS)
    out = io.StringIO()
    obs.logger().registered_handler.setStream(out)
    logging.getLogger("cdp.entry.api").error("failed with %s", KEY, exc_info=boom(), extra={"n": [TOKEN]})
    logging.getLogger("mangum.http").warning("header %s", base64.b64encode(TOKEN.encode()).decode())
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 2, out.getvalue()
    text = out.getvalue()
    for secret in SECRETS:
        for form in forms(secret):
            assert form not in text
    assert "RuntimeError" in lines[0]["exception"] and "Traceback" in lines[0]["exception"]
    obs.configure("INFO", SECRETS)  # configured twice: still one redaction, one line per record
    logging.getLogger("cdp.x").error("again %s", KEY)
    assert len(out.getvalue().splitlines()) == 3
