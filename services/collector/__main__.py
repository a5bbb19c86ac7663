"""``python -m services.collector``: consume job.ended/pod.finished, observe Pods, reconcile.

Three threads beside the consumer, each with its own Slurm and API calls (the consumer's idle
callback runs on the thread that keeps the broker's heartbeats flowing, so no sweep runs
there): the Pod watch that keeps each Pod's last state (``KubeCluster.follow_pods``: a Pod
the runner deleted still has its summary), the Pod observer every
``COLLECTOR_OBSERVE_INTERVAL`` (AdminComment, a Pod's end), and the reconcile at start and
every ``COLLECTOR_RECONCILE_INTERVAL``, which publishes its repairs on a connection of its own.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

from services.collector.backlog import SubmitBacklog
from services.collector.cluster import KubeCluster
from services.collector.config import CollectorSettings
from services.collector.handlers import Collector, Outcome, RunKey
from services.collector.observing import PodObserver
from services.collector.outputs import NasFiles
from services.collector.reconciling import Bounds, Reconciler
from services.collector.slurm import SlurmAdapter
from shared.broker import COLLECTOR, Consumer, Publisher
from shared.config import BrokerSettings, NasSettings
from shared.errors import ServiceError
from shared.jobscript.policy import load_policy, policy_path
from shared.kube import RateLimiter, api_client
from shared.lifecycle import start_service
from shared.logs import get_logger
from shared.metrics import observe_consumer
from shared.receipts import ReceiptBook, advance_quietly
from shared.slurmctl import SlurmCtl

_log = get_logger("services.collector")


def build(
    settings: CollectorSettings, nas: NasSettings, publisher: Publisher
) -> tuple[Collector, PodObserver, Reconciler, KubeCluster]:
    """Wire the real boundaries into the handler, the observer and the reconciler."""
    cluster = KubeCluster(
        api_client(settings.kubeconfig),
        settings.pod_grace_s,
        RateLimiter(settings.kube_qps, settings.kube_burst),
    )
    ctl = SlurmCtl(timeout_s=settings.slurm_timeout_s)
    files = NasFiles(nas.state_dir)
    collector = Collector(SlurmAdapter(ctl), cluster, files, finished_receipt(ReceiptBook(nas)))
    observer = PodObserver(cluster, ctl, collector.note_pod_finished)
    reconciler = Reconciler(
        collector,
        ctl,
        files,
        SubmitBacklog(nas.submit_dir, load_policy(policy_path()).max_script_bytes),
        publisher.publish,
        Bounds(settings.relaunch_after_s, settings.stale_file_after_s),
    )
    return collector, observer, reconciler, cluster


def finished_receipt(book: ReceiptBook) -> Callable[[RunKey, Outcome, str | None], None]:
    """Mark a cleaned-up run's receipt finished, with where its output and summary are."""

    def finished(run: RunKey, outcome: Outcome, output: str | None) -> None:
        paths: dict[str, str] = {}
        if output:
            paths["output_path"] = output
            if os.path.isfile(f"{output}.summary.json"):
                paths["summary_path"] = f"{output}.summary.json"
        advance_quietly(
            book,
            run.job_id,
            run.restart_count,
            "finished",
            state=outcome.state,
            exit_code=outcome.exit_code,
            reason=outcome.reason,
            **paths,
        )

    return finished


def every(interval_s: float, what: str, sweep: Callable[[], object], stop: threading.Event) -> None:
    """Run ``sweep`` now and then every interval until stopped; a failed sweep waits."""
    while not stop.is_set():
        try:
            sweep()
        except ServiceError as exc:
            _log.warning(f"{what} failed; leaving everything in place", error=str(exc))
        except Exception:  # a dead sweep thread would leave a collector that looks alive
            _log.exception(f"{what} crashed; trying again next time")
        stop.wait(interval_s)


def main() -> int:
    """Run until SIGTERM; exit 2 on a configuration error."""
    stop = start_service("collector")
    settings = CollectorSettings()
    publisher = Publisher(BrokerSettings())
    try:
        collector, observer, reconciler, cluster = build(settings, NasSettings(), publisher)
    except Exception as exc:  # the Kubernetes client raises its own ConfigException
        _log.error("cannot start: no usable Kubernetes credentials or policy", error=str(exc))
        return 2
    # Not joined at the end: a watch waits for its next event (up to WATCH_S) before it sees
    # the stop, and it holds nothing to finish; the process ends it.
    threading.Thread(target=cluster.follow_pods, args=(stop,), name="pods", daemon=True).start()
    threads = [
        threading.Thread(
            target=every,
            args=(settings.observe_interval_s, "pod observation", observer.sweep, stop),
            name="observe",
            daemon=True,
        ),
        threading.Thread(
            target=every,
            args=(settings.reconcile_interval_s, "reconcile", reconciler.reconcile, stop),
            name="reconcile",
            daemon=True,
        ),
    ]
    for thread in threads:
        thread.start()
    broker = BrokerSettings()
    Consumer(broker, COLLECTOR, observe_consumer(collector.handle, broker, COLLECTOR), stop).run()
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    publisher.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
