"""Prometheus metrics. One registry per gateway process, kept across reloads.

With several worker processes, ``PROMETHEUS_MULTIPROC_DIR`` is set before prometheus-client is
imported (the supervisor does it); values then live in shared files and ``render`` sums them
across workers, so ``/metrics`` on any worker shows the whole gateway.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                   10, 30)


class Metrics:
    """The gateway's metrics, named ``wimse_gateway_<noun>_<unit>``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.requests = Counter(
            "wimse_gateway_requests", "Requests handled, by route, decision and status",
            ["route", "decision", "status"], registry=r)
        self.request_seconds = Histogram(
            "wimse_gateway_request_seconds", "Time from request to response headers, by route",
            ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge(
            "wimse_gateway_in_flight_requests", "Requests being handled", registry=r,
            multiprocess_mode="livesum")
        self.authn_failures = Counter(
            "wimse_gateway_authn_failures", "Authentication failures, by reason",
            ["reason"], registry=r)
        self.refusals = Counter(
            "wimse_gateway_refusals", "Refused requests, by reason", ["reason"], registry=r)
        self.exchanges = Counter(
            "wimse_gateway_exchanges", "Credential exchanges, by profile and outcome",
            ["profile", "outcome"], registry=r)
        self.exchange_seconds = Histogram(
            "wimse_gateway_exchange_seconds", "Time to obtain a credential (cache misses)",
            ["profile"], buckets=LATENCY_BUCKETS, registry=r)
        self.cache_events = Counter(
            "wimse_gateway_credential_cache_events", "Credential cache hits, misses, "
            "evictions and refreshes", ["event"], registry=r)
        self.sts_seconds = Histogram(
            "wimse_gateway_sts_seconds", "Token service round trips, by service and outcome",
            ["sts", "outcome"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_seconds = Histogram(
            "wimse_gateway_upstream_seconds", "Upstream time to response headers, by route",
            ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.reloads = Counter(
            "wimse_gateway_reloads", "Config/policy reloads, by outcome", ["outcome"], registry=r)
        self.policy_info = Gauge(
            "wimse_gateway_policy_loaded_timestamp_seconds",
            "When the serving policy was loaded, labelled with its digest", ["digest"], registry=r,
            multiprocess_mode="liveall")

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: label lookups are a measurable share of a
        request's cost, and the label sets (route x decision x status) are few."""
        key = (id(metric), labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
