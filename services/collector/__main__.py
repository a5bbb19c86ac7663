"""``python -m services.collector``: consume job.ended/pod.finished and sweep for leftovers.

The sweep runs in its own thread (once at start, then every ``COLLECTOR_RECONCILE_INTERVAL``)
rather than in the consumer's idle callback: a sweep runs Slurm commands and API calls, and the
idle callback runs on the thread that keeps the broker's heartbeats flowing.
"""

from __future__ import annotations

import sys
import threading

from services.collector.cluster import KubeCluster
from services.collector.config import CollectorSettings
from services.collector.handlers import Collector
from services.collector.outputs import NasFiles
from services.collector.slurm import SlurmAdapter
from shared.broker import COLLECTOR, Consumer
from shared.config import BrokerSettings, NasSettings
from shared.errors import ServiceError
from shared.kube import RateLimiter, api_client
from shared.lifecycle import start_service
from shared.logs import get_logger
from shared.slurmctl import SlurmCtl

_log = get_logger("services.collector")


def build(settings: CollectorSettings, nas: NasSettings) -> Collector:
    """Wire the real boundaries into the handler."""
    cluster = KubeCluster(
        api_client(settings.kubeconfig),
        settings.pod_grace_s,
        RateLimiter(settings.kube_qps, settings.kube_burst),
    )
    slurm = SlurmAdapter(SlurmCtl(timeout_s=settings.slurm_timeout_s))
    return Collector(slurm, cluster, NasFiles(nas.state_dir))


def sweep_forever(collector: Collector, interval_s: float, stop: threading.Event) -> None:
    """Reconcile now and then every interval until stopped; a failed sweep waits for the next."""
    while not stop.is_set():
        try:
            finished = [r for r in collector.reconcile() if r.done]
            if finished:
                _log.info("reconcile cleaned up", runs=[r.run.name for r in finished])
        except ServiceError as exc:
            _log.warning("reconcile failed; leaving everything in place", error=str(exc))
        stop.wait(interval_s)


def main() -> int:
    """Run until SIGTERM; exit 2 on a configuration error."""
    stop = start_service("collector")
    settings = CollectorSettings()
    try:
        collector = build(settings, NasSettings())
    except Exception as exc:  # the Kubernetes client raises its own ConfigException
        _log.error("cannot start: no usable Kubernetes credentials", error=str(exc))
        return 2
    sweeper = threading.Thread(
        target=sweep_forever,
        args=(collector, settings.reconcile_interval_s, stop),
        name="reconcile",
        daemon=True,
    )
    sweeper.start()
    Consumer(BrokerSettings(), COLLECTOR, collector.handle, stop).run()
    stop.set()
    sweeper.join(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
