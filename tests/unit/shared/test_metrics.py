import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry import metrics
from opentelemetry.metrics import _internal as global_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.util._once import Once

from shared.messages import Envelope, JobEnded, JobRejected, JobStarted, PodLaunched
from shared.messages.jobs import Problem
from shared.metrics import (
    LATENCY_BUCKETS_S,
    PrometheusEndpoint,
    record,
    rejection_kind,
    render_prometheus,
    watch_queue_depth,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
RUN = {"job_id": 7, "restart_count": 0}
ON_NODE = {**RUN, "node": "n1", "user": "alice", "uid": 2001, "gid": 2001}


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("#K8S_IMAGE registry 'docker.io' is not allowed (allowed: nas-hub.local:5407)", "image"),
        ("asks for 9 CPUs; the limit is 2", "resources"),
        ("--uid is not allowed: it changes who the job runs as", "option"),
        ("the file is 2 MiB; the limit is 1 MiB; it was not read", "too_large"),
        ("something new", "other"),
    ],
)
def test_rejections_get_a_bounded_kind(message: str, kind: str) -> None:
    assert rejection_kind(message) == kind


def test_the_page_is_prometheus_text_with_counters_and_histograms() -> None:
    endpoint = PrometheusEndpoint("127.0.0.1", 0)
    try:
        provider = MeterProvider(metric_readers=[endpoint.reader])
        meter = provider.get_meter("test")
        meter.create_counter("slurmk8s.rejections").add(2, {"reason": "image"})
        meter.create_histogram(
            "slurmk8s.launch.latency", unit="s", explicit_bucket_boundaries_advisory=(0.5, 1.0)
        ).record(0.3)
        url = f"http://127.0.0.1:{endpoint.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            page = response.read().decode()
    finally:
        endpoint.close()
    assert 'slurmk8s_rejections_total{reason="image"} 2' in page
    assert "# TYPE slurmk8s_launch_latency_seconds histogram" in page
    assert 'slurmk8s_launch_latency_seconds_bucket{le="0.5"} 1' in page
    assert 'slurmk8s_launch_latency_seconds_bucket{le="+Inf"} 1' in page
    assert "slurmk8s_launch_latency_seconds_count 1" in page
    assert render_prometheus(None) == "\n"


def _fresh_global_meter_provider(reader: InMemoryMetricReader) -> None:
    """Give shared.metrics' instruments a provider with ``reader``.

    The SDK lets the global provider be set once per process, and a test that configures a
    service's telemetry (test_broker does) may have set it already when the whole suite runs;
    the instruments are proxies that rebind to whichever provider is set last.
    """
    global_metrics._METER_PROVIDER_SET_ONCE = Once()
    global_metrics._METER_PROVIDER = None
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))


def test_a_handled_message_feeds_the_instruments() -> None:
    reader = InMemoryMetricReader()
    _fresh_global_meter_provider(reader)
    started = Envelope.wrap(JobStarted(**ON_NODE), occurred_at=T0)
    launched = Envelope.wrap(PodLaunched(**RUN, namespace="ns", pod_name="p", node="n1"))
    record(started, [launched], T0 + timedelta(seconds=1.5))
    record(Envelope.wrap(JobEnded(**ON_NODE), occurred_at=T0), [], T0 + timedelta(seconds=4))
    rejected = JobRejected(
        source_path="/s/x.sh",
        failed_path="/f/x.sh",
        error_path="/f/x.sh.error",
        sha256="0" * 64,
        problems=(Problem(line=2, message="asks for 9 CPUs; the limit is 2"),),
    )
    record(started, [Envelope.wrap(rejected)], T0)
    watch_queue_depth(lambda name: None if name == "down" else 3, ["q", "down"])
    page = render_prometheus(reader.get_metrics_data())
    assert 'slurmk8s_queue_depth{queue="q"} 3' in page
    assert "down" not in page
    assert "slurmk8s_pods_launched_total 1" in page
    assert "slurmk8s_launch_latency_seconds_sum 1.5" in page
    assert 'slurmk8s_launch_latency_seconds_bucket{le="2.5"} 1' in page
    assert 2.5 in LATENCY_BUCKETS_S
    assert "slurmk8s_cleanup_latency_seconds_sum 4.0" in page
    assert 'slurmk8s_rejections_total{reason="resources"} 1' in page
