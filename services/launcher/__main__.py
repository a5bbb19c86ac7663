"""``python -m services.launcher``: consume job.started, create each run's Pod, note its phase.

The Pod sweep (AdminComment, pod.finished) runs in its own thread with its own publisher
connection: it calls Slurm and the API, and the consumer's idle callback runs on the thread
that keeps the broker's heartbeats flowing.
"""

from __future__ import annotations

import sys
import threading

from services.launcher.config import LauncherSettings
from services.launcher.handlers import Defaults, Launcher
from services.launcher.k8s import KubeRuns
from services.launcher.users import HostUsers
from services.launcher.watching import PodWatcher
from shared.broker import LAUNCHER, Consumer, Publisher
from shared.config import BrokerSettings, NasSettings
from shared.errors import ServiceError
from shared.jobscript.policy import load_policy, policy_path
from shared.kube import RateLimiter, api_client
from shared.lifecycle import start_service
from shared.logs import get_logger
from shared.registry import RegistrySettings, resolve_digest
from shared.slurmctl import SlurmCtl

_log = get_logger("services.launcher")

WATCH_INTERVAL_S = 2.0
"""Pod sweeps: one list call each; a failure reason shows on the job within seconds."""


def build(settings: LauncherSettings, nas: NasSettings) -> tuple[Launcher, KubeRuns, SlurmCtl]:
    """Wire the real boundaries into the handler."""
    runs = KubeRuns(
        api_client(settings.kubeconfig),
        RateLimiter(settings.kube_qps, settings.kube_burst),
        nas.state_dir,
        settings.api_server,
    )
    slurm = SlurmCtl(timeout_s=settings.slurm_timeout_s)
    registry = RegistrySettings()
    defaults = Defaults(
        nas_root=str(nas.nas_root),
        default_shm_mb=settings.default_shm_mb,
        image_pull_policy=settings.image_pull_policy,
        termination_grace_s=settings.termination_grace_s,
        deadline_margin_s=settings.deadline_margin_s,
        token_max_s=settings.token_max_s,
        tools_image=settings.tools_image,
        scratch_size=settings.scratch_size,
    )
    launcher = Launcher(
        slurm,
        runs,
        HostUsers(nas.nas_root),
        defaults,
        lambda: load_policy(policy_path()),
        lambda image: resolve_digest(
            image, registry.timeout_s, plain_http=registry.plain_http_hosts
        ),
        settings.k8s_node,
    )
    return launcher, runs, slurm


def watch_forever(watcher: PodWatcher, stop: threading.Event) -> None:
    """Sweep the Pods until stopped; a failed sweep waits for the next."""
    while not stop.is_set():
        try:
            watcher.sweep()
        except ServiceError as exc:
            _log.warning("pod sweep failed", error=str(exc))
        stop.wait(WATCH_INTERVAL_S)


def main() -> int:
    """Run until SIGTERM."""
    stop = start_service("launcher")
    settings = LauncherSettings()
    broker = BrokerSettings()
    launcher, runs, slurm = build(settings, NasSettings())
    watcher_thread: threading.Thread | None = None
    publisher: Publisher | None = None
    if settings.watch_pods:
        publisher = Publisher(broker)
        watcher = PodWatcher(runs, slurm, publisher.publish)
        watcher_thread = threading.Thread(
            target=watch_forever, args=(watcher, stop), name="pod-watch", daemon=True
        )
        watcher_thread.start()
    Consumer(broker, LAUNCHER, launcher.handle, stop).run()
    stop.set()
    if watcher_thread is not None:
        watcher_thread.join(timeout=30)
    if publisher is not None:
        publisher.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
