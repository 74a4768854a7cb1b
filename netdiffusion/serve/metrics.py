"""Prometheus metrics on a private registry (so tests can build several apps in one process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily


class ServiceMetrics:
    def __init__(self, job_counts: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("netdiffusion_http_requests_total", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("netdiffusion_http_request_seconds", "HTTP request latency by route",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.jobs_submitted = Counter("netdiffusion_jobs_submitted_total", "accepted jobs by where they run",
                                      ["target", "format"], registry=self.registry)
        self.jobs_rejected = Counter("netdiffusion_jobs_rejected_total", "rejected job requests by reason",
                                     ["reason"], registry=self.registry)
        self.job_seconds = Histogram("netdiffusion_job_seconds", "wall time of finished local jobs",
                                     ["status"], registry=self.registry,
                                     buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
        self.workers_busy = Gauge("netdiffusion_workers_busy", "local jobs running now", registry=self.registry)
        self.registry.register(_JobCollector(job_counts))


class _JobCollector:
    """Jobs by status, read from the job store at scrape time (true across restarts)."""

    def __init__(self, job_counts: Callable[[], dict[str, int]]) -> None:
        self.job_counts = job_counts

    def collect(self):  # noqa: ANN201 - prometheus collector protocol
        family = GaugeMetricFamily("netdiffusion_jobs", "jobs in the store by status", labels=["status"])
        for status, n in self.job_counts().items():
            family.add_metric([status], n)
        yield family
