"""The Metrics port as Prometheus instruments, in a CollectorRegistry of its own (one per app
instance, never the process-global one: two apps in one process, as in the tests, do not mix)."""

from __future__ import annotations

import logging
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from cdp.domain.metrics import CATALOGUE, COUNTER, GAUGE, MetricDef

log = logging.getLogger("cdp.adapters.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST


class PrometheusMetrics:
    def __init__(self, catalogue: dict[str, MetricDef] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._instruments: dict[str, object] = {}
        for d in (catalogue or CATALOGUE).values():
            self._instruments[d.name] = self._build(d)

    def _build(self, d: MetricDef):
        kw = {"labelnames": d.labels, "registry": self.registry}
        if d.kind == COUNTER:
            return Counter(d.name.removesuffix("_total"), d.help, **kw)
        if d.kind == GAUGE:
            return Gauge(d.name, d.help, **kw)
        return Histogram(d.name, d.help, buckets=d.buckets, **kw)

    def _child(self, name: str, labels: dict[str, str]):
        inst = self._instruments.get(name)
        if inst is None:
            log.debug("unknown metric %s", name)
            return None
        return inst.labels(**{k: str(v) for k, v in labels.items()}) if labels else inst

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        try:
            child = self._child(name, labels)
            if child is not None:
                child.inc(value)
        except Exception:  # a wrong label set is a bug, never a failed request
            log.warning("metric %s not recorded", name, exc_info=True)

    def set(self, name: str, value: float, **labels: str) -> None:
        try:
            child = self._child(name, labels)
            if child is not None:
                child.set(value)
        except Exception:
            log.warning("metric %s not recorded", name, exc_info=True)

    def observe(self, name: str, value: float, **labels: str) -> None:
        try:
            child = self._child(name, labels)
            if child is not None:
                child.observe(value)
        except Exception:
            log.warning("metric %s not recorded", name, exc_info=True)

    def flush(self) -> None:
        """Nothing to flush: Prometheus scrapes."""

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
