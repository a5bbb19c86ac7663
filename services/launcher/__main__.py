"""``python -m services.launcher``: consume job.started and create each run's objects.

Following the Pods afterwards (AdminComment, a Pod's end) is the collector's observer's job
(``services.collector.observing``): one observer, one reconciler.
"""

from __future__ import annotations

import sys

from services.launcher.config import LauncherSettings
from services.launcher.handlers import Defaults, Launcher
from services.launcher.k8s import KubeRuns
from services.launcher.users import HostUsers
from shared.broker import LAUNCHER, Consumer
from shared.config import BrokerSettings, NasSettings
from shared.jobscript.policy import load_policy, policy_path
from shared.kube import RateLimiter, api_client
from shared.lifecycle import start_service
from shared.metrics import observe_consumer
from shared.receipts import ReceiptBook, marking_running
from shared.registry import RegistrySettings, resolve_digest
from shared.slurmctl import SlurmCtl


def build(settings: LauncherSettings, nas: NasSettings) -> Launcher:
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
        scratch_size=settings.scratch_size,
    )
    launcher = Launcher(
        slurm,
        runs,
        HostUsers(nas.nas_root, settings.tools_dir),
        defaults,
        lambda: load_policy(policy_path()),
        lambda image: resolve_digest(
            image, registry.timeout_s, plain_http=registry.plain_http_hosts
        ),
        settings.k8s_node,
    )
    return launcher


def main() -> int:
    """Run until SIGTERM."""
    stop = start_service("launcher")
    nas = NasSettings()
    launcher = build(LauncherSettings(), nas)
    handler = marking_running(launcher.handle, ReceiptBook(nas))
    broker = BrokerSettings()
    Consumer(broker, LAUNCHER, observe_consumer(handler, broker, LAUNCHER), stop).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
