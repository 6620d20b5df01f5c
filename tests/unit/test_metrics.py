"""The metric adapters (Prometheus registry per instance, EMF lines), the status gauges and the
bounded request log behind the status page."""

from __future__ import annotations

import json

from cdp.adapters.metrics_emf import MAX_VALUES, EmfMetrics
from cdp.adapters.metrics_prometheus import PrometheusMetrics
from cdp.domain import metrics as M
from cdp.entry.api.observe import HISTORY_MINUTES, MAX_MODELS, MAX_RECENT, RecentRequest, RequestLog
from cdp.ports import NO_METRICS
from prometheus_client.parser import text_string_to_metric_families


def prom_values(m: PrometheusMetrics) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(m.exposition().decode()) for s in f.samples}


def test_prometheus_registries_are_per_instance():
    a, b = PrometheusMetrics(), PrometheusMetrics()
    a.inc(M.REQUESTS, route="/v1/models", status="200", model="-")
    a.inc(M.REQUESTS, route="/v1/models", status="200", model="-")
    a.observe(M.TTFT, 0.4, model="gpt-4o")
    a.inc(M.ACTIVE_STREAMS)
    a.inc(M.ACTIVE_STREAMS, -1)
    va, vb = prom_values(a), prom_values(b)
    assert va[("cdp_requests_total", (("model", "-"), ("route", "/v1/models"), ("status", "200")))] == 2
    assert va[("cdp_time_to_first_token_seconds_bucket", (("le", "0.5"), ("model", "gpt-4o")))] == 1
    assert va[("cdp_time_to_first_token_seconds_bucket", (("le", "0.25"), ("model", "gpt-4o")))] == 0
    assert va[("cdp_active_streams", ())] == 0
    assert not any(k[0] == "cdp_requests_total" for k in vb)


def test_prometheus_never_raises_on_a_wrong_call():
    m = PrometheusMetrics()
    m.inc("cdp_no_such_metric")
    m.inc(M.REQUESTS, wrong_label="x")
    m.observe(M.REQUESTS, 1.0, route="r", status="200", model="m")  # a counter has no observe
    NO_METRICS.inc(M.REQUESTS, route="r")  # the default records nothing, silently


def emf_lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]


def test_emf_one_object_per_label_set_and_flush_empties(capsys):
    m = EmfMetrics(namespace="Test", service="svc")
    m.inc(M.COZE_ERRORS, kind="user_limit")
    m.inc(M.COZE_ERRORS, kind="user_limit")
    m.inc(M.COZE_ERRORS, kind="service")
    m.inc(M.DISCORD_429, route="POST /channels/{channel_id}/messages")
    for v in (0.01, 0.02, 0.03):
        m.observe(M.EDIT_LATENCY, v)
    m.set(M.ACCOUNTS, 3, state="healthy")
    m.flush()
    docs = emf_lines(capsys)
    coze = {d["kind"]: d["cdp_coze_errors_total"] for d in docs if "cdp_coze_errors_total" in d}
    assert coze == {"user_limit": [2.0], "service": [1.0]}
    edit = next(d for d in docs if "cdp_edit_latency_seconds" in d)
    assert edit["cdp_edit_latency_seconds"] == [0.01, 0.02, 0.03]
    assert edit["_aws"]["CloudWatchMetrics"][0] == {
        "Namespace": "Test", "Dimensions": [["service"]],
        "Metrics": [{"Name": "cdp_edit_latency_seconds", "Unit": "Seconds"}]}
    assert next(d for d in docs if "cdp_discord_rate_limited_total" in d)["route"] == \
        "POST /channels/{channel_id}/messages"
    m.flush()
    assert emf_lines(capsys) == []  # each invocation writes only its own values


def test_emf_gauge_keeps_its_value_across_flushes_and_values_are_capped(capsys):
    m = EmfMetrics(namespace="Test", service="svc")
    m.inc(M.ACTIVE_STREAMS)
    m.inc(M.ACTIVE_STREAMS)
    m.flush()
    assert next(d for d in emf_lines(capsys))["cdp_active_streams"] == [2.0]
    m.inc(M.ACTIVE_STREAMS, -1)
    for i in range(MAX_VALUES + 20):
        m.observe(M.TTFT, 1.0, model="")
    m.flush()
    docs = emf_lines(capsys)
    assert next(d for d in docs if "cdp_active_streams" in d)["cdp_active_streams"] == [1.0]
    ttft = next(d for d in docs if "cdp_time_to_first_token_seconds" in d)
    assert len(ttft["cdp_time_to_first_token_seconds"]) == MAX_VALUES and ttft["model"] == "-"


def test_status_gauges_from_a_status_body():
    status = {"gateway": {"state": "resuming", "resumes": 4},
              "accounts_by_health": {"healthy": 2, "dead": 1}, "bots_by_health": {"healthy": 1, "resting": 2},
              "temporary_channels": {"count": 7, "in_use": 5}}
    got = {(n, tuple(sorted(lab.items()))): v for n, v, lab in M.status_gauges(status)}
    assert got[(M.GATEWAY_STATE, (("state", "resuming"),))] == 1
    assert got[(M.GATEWAY_STATE, (("state", "ready"),))] == 0
    assert got[(M.GATEWAY_RESUMES, ())] == 4
    assert got[(M.ACCOUNTS, (("state", "healthy"),))] == 2 and got[(M.ACCOUNTS, (("state", "resting"),))] == 0
    assert got[(M.ACCOUNTS, (("state", "dead"),))] == 1
    assert got[(M.BOTS_RESTING, ())] == 2
    assert got[(M.TEMP_CHANNELS, (("state", "in_use"),))] == 5
    assert got[(M.TEMP_CHANNELS, (("state", "pending_delete"),))] == 2
    assert got[(M.TEMP_CHANNEL_LIMIT, ())] == 500


def req(at: float, **kw) -> RecentRequest:
    base = dict(id="req_1", at=at, method="POST", route="/v1/chat/completions", model="gpt-4o", status=200,
                ttft=0.5, duration=1.0, error=None, stream=False, account="tok:aaaa")
    return RecentRequest(**{**base, **kw})


def test_request_log_is_bounded_and_charts_the_last_hour():
    now = [86400 * 100 + 3600.0]
    log = RequestLog(clock=lambda: now[0])
    for i in range(MAX_RECENT + 30):
        log.add(req(now[0] - 7200 + i, id=f"req_{i}"))  # two hours ago: out of the chart
    log.add(req(now[0] - 120, ttft=1.0))
    log.add(req(now[0] - 110, ttft=3.0))
    log.add(req(now[0] - 100, ttft=9.0, status=503, error="bot_limit"))
    assert len(log.recent) == MAX_RECENT
    assert log.recent_list(2)[0]["error"] == "bot_limit"
    hist = log.history()
    assert len(hist) == HISTORY_MINUTES and hist[-1]["minute"] == (now[0] // 60) * 60
    busy = [h for h in hist if h["requests"]]  # the three of the last minutes share one minute
    assert [(h["requests"], h["errors"], h["ttft_avg"], h["ttft_max"]) for h in busy] == [(3, 1, 2.0, 3.0)]
    assert hist.index(busy[0]) == HISTORY_MINUTES - 3  # two minutes ago
    # today (UTC) began an hour ago: the requests of two hours ago were yesterday's
    assert log.requests_today() == {"tok:aaaa": 3}
    now[0] += 86400  # another day
    assert log.requests_today() == {}


def test_model_labels_are_bounded():
    log = RequestLog()
    assert log.model_label(None) == "-"
    labels = {log.model_label(f"model-{i}") for i in range(MAX_MODELS + 10)}
    assert len(labels) == MAX_MODELS + 1 and "other" in labels
    assert log.model_label("model-1") == "model-1"
    assert log.model_label("x" * 500) == "other"  # the set is full; a long name is cut first anyway
