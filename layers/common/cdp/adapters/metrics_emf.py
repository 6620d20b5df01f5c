"""The Metrics port as CloudWatch Embedded Metric Format lines (Powertools), for Lambda.

Values are gathered in memory and written by `flush()` once per invocation (the API handler after
each event, the stream function after each response): one EMF object per set of labels, the labels as
dimensions, under the catalogue's names (the same as /metrics in `cdp serve`). Counters are summed,
a gauge keeps its last value, a histogram's values are all sent (CloudWatch computes percentiles)."""

from __future__ import annotations

import logging
import os
import threading
from collections import defaultdict

from cdp.domain.metrics import CATALOGUE, COUNTER, GAUGE, HISTOGRAM, MetricDef

log = logging.getLogger("cdp.adapters.metrics")

NAMESPACE = "CozeDiscordProxy"
SERVICE = "coze-discord-proxy"
MAX_VALUES = 100  # EMF's limit of values per metric in one object


class EmfMetrics:
    def __init__(self, namespace: str | None = None, service: str | None = None,
                 catalogue: dict[str, MetricDef] | None = None) -> None:
        self.namespace = namespace or os.environ.get("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE)
        self.service = service or os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE)
        self.catalogue = catalogue or CATALOGUE
        self._lock = threading.Lock()
        # labels (sorted tuple) -> name -> values
        self._pending: dict[tuple[tuple[str, str], ...], dict[str, list[float]]] = defaultdict(dict)
        self._gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}  # survive a flush

    def _record(self, name: str, value: float, labels: dict[str, str], kinds: tuple[str, ...]) -> None:
        d = self.catalogue.get(name)
        if d is None or d.kind not in kinds:
            log.debug("metric %s not recorded as %s", name, kinds)
            return
        key = tuple(sorted((k, str(v) or "-") for k, v in labels.items()))
        with self._lock:
            values = self._pending[key].setdefault(name, [])
            if d.kind == COUNTER and values:
                values[0] += value
            elif d.kind == GAUGE:  # inc on a gauge adds to its running value
                total = self._gauges.get((name, key), 0.0) + value if kinds == (COUNTER, GAUGE) else value
                self._gauges[(name, key)] = total
                values[:] = [total]
            elif len(values) < MAX_VALUES:
                values.append(value)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        self._record(name, value, labels, (COUNTER, GAUGE))

    def set(self, name: str, value: float, **labels: str) -> None:
        self._record(name, value, labels, (GAUGE,))

    def observe(self, name: str, value: float, **labels: str) -> None:
        self._record(name, value, labels, (HISTOGRAM,))

    def flush(self) -> None:
        """Write what was gathered since the last flush (one EMF line per label set), then forget it."""
        with self._lock:
            pending, self._pending = self._pending, defaultdict(dict)
        if not pending:
            return
        try:
            from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
        except ImportError:  # pragma: no cover - powertools is a runtime dependency
            return
        for labels, metrics in pending.items():
            try:
                emf = EphemeralMetrics(namespace=self.namespace, service=self.service)
                for k, v in labels:
                    emf.add_dimension(name=k, value=v)
                for name, values in metrics.items():
                    unit = MetricUnit[self.catalogue[name].unit]
                    for v in values:
                        emf.add_metric(name=name, unit=unit, value=v)
                if emf.metric_set:  # powertools writes by itself at 100 values: maybe nothing is left
                    emf.flush_metrics()
            except Exception:  # metrics never fail an invocation
                log.warning("EMF metrics not written", exc_info=True)
