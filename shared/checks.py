"""``slurmk8s check``: is this deployment able to run jobs? One line per check, exit 0 if all pass.

What the seed's ``test_suite.sh --test infrastructure`` gave operators, for a real deployment:
the broker (reachable with the configured credentials, every queue declared, a consumer on
each service's queue), Slurm (backfill, multifactor priority, our prolog, epilog and
``job_submit.lua``), Kubernetes (reachable; the services' credentials may do what the launcher
and collector do in the jobs namespace; the namespace enforces the ``restricted`` Pod Security
profile), the NAS (mounted, writable), the registry (answering), and ``--smoke``: a hello job
dropped on the NAS, followed through its live receipt to ``finished``.

Each check is a function returning a ``Result``; failures of the thing checked become a
failed line with the reason, never a traceback. Every call has a timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shared.config import BrokerSettings, NasSettings
from shared.errors import ServiceError
from shared.jobpods import JOB_NAMESPACE

EXIT_OK, EXIT_FAILED = 0, 1
_TIMEOUT_S = 10.0
COMPONENTS = ("broker", "services", "slurm", "kubernetes", "nas", "registry", "smoke")

# What the launcher and the collector do in the jobs namespace (services/launcher/k8s.py,
# services/collector/cluster.py): (verb, resource, subresource, API group).
K8S_RIGHTS = (
    ("create", "pods", "", ""),
    ("get", "pods", "", ""),
    ("list", "pods", "", ""),
    ("delete", "pods", "", ""),
    ("create", "serviceaccounts", "", ""),
    ("delete", "serviceaccounts", "", ""),
    ("create", "serviceaccounts", "token", ""),
    ("create", "configmaps", "", ""),
    ("delete", "configmaps", "", ""),
    ("create", "roles", "", "rbac.authorization.k8s.io"),
    ("create", "rolebindings", "", "rbac.authorization.k8s.io"),
    ("list", "events", "", ""),
)


@dataclass(frozen=True)
class Result:
    """One check's line: which component, what was checked, whether it passed, why."""

    component: str
    name: str
    ok: bool
    detail: str = ""


Check = Callable[[], list[Result]]


def _slurm_config() -> dict[str, str]:
    from shared.slurmctl import run_command

    config: dict[str, str] = {}
    for line in run_command(["scontrol", "show", "config"], _TIMEOUT_S).splitlines():
        key, sep, value = line.partition("=")
        if sep:
            config[key.strip()] = value.strip()
    return config


def check_slurm() -> list[Result]:
    """Backfill, multifactor priority, our prolog, epilog and job_submit.lua."""
    try:
        config = _slurm_config()
    except ServiceError as exc:
        return [Result("slurm", "slurmctld answers", False, str(exc))]
    wanted = (
        ("backfill scheduler", "SchedulerType", "sched/backfill"),
        ("multifactor priority", "PriorityType", "priority/multifactor"),
        ("job_submit.lua", "JobSubmitPlugins", "lua"),
        ("slurm-k8s prolog", "Prolog", "slurm-k8s/prolog"),
        ("slurm-k8s epilog", "Epilog", "slurm-k8s/epilog"),
    )
    results = [Result("slurm", "slurmctld answers", True, config.get("ClusterName", ""))]
    for name, key, needle in wanted:
        value = config.get(key, "")
        results.append(Result("slurm", name, needle in value, f"{key}={value or '(unset)'}"))
    return results


def check_broker(settings: BrokerSettings | None = None) -> list[Result]:
    """Connect with the configured credentials; every queue declared; consumers on each."""
    from shared.broker.connection import close_quietly, connect
    from shared.broker.topology import ALL_QUEUES

    settings = settings or BrokerSettings()
    try:
        connection = connect(settings.model_copy(update={"connect_attempts": 1}))
    except ServiceError as exc:
        return [Result("broker", "reachable with the configured credentials", False, str(exc))]
    results = [Result("broker", "reachable with the configured credentials", True)]
    try:
        for spec in ALL_QUEUES:
            for name in (spec.name, spec.retry_queue, spec.dead_queue):
                channel = connection.channel()
                try:
                    ok = channel.queue_declare(name, passive=True)
                except Exception as exc:  # pika closes the channel on a missing queue
                    results.append(Result("broker", f"queue {name} declared", False, str(exc)))
                    continue
                if name == spec.name:
                    consumers = ok.method.consumer_count
                    service = name.split(".", 1)[0]
                    results.append(
                        Result(
                            "services",
                            f"{service} consuming {name}",
                            consumers > 0,
                            f"{consumers} consumer(s), {ok.method.message_count} message(s) ready",
                        )
                    )
                else:
                    results.append(
                        Result(
                            "broker",
                            f"queue {name} declared",
                            True,
                            f"{ok.method.message_count} message(s)",
                        )
                    )
                with contextlib.suppress(Exception):
                    channel.close()
    finally:
        close_quietly(connection)
    return results


def check_kubernetes() -> list[Result]:
    """Reachable; the services' credentials may do their work; the namespace is restricted."""
    from kubernetes import client

    from shared.kube import api_call, api_client

    kubeconfig = os.environ.get("KUBECONFIG")
    try:
        api = api_client(Path(kubeconfig) if kubeconfig else None)
        core = client.CoreV1Api(api)
        with api_call():
            namespace = core.read_namespace(JOB_NAMESPACE, _request_timeout=_TIMEOUT_S)
    except Exception as exc:  # a broken kubeconfig raises the client's own ConfigException
        return [Result("kubernetes", "API server reachable", False, str(exc))]
    labels = (namespace.metadata.labels if namespace.metadata else None) or {}
    enforce = labels.get("pod-security.kubernetes.io/enforce", "")
    results = [
        Result("kubernetes", "API server reachable", True, kubeconfig or "in-cluster"),
        Result(
            "kubernetes",
            f"namespace {JOB_NAMESPACE} enforces restricted",
            enforce == "restricted",
            f"pod-security.kubernetes.io/enforce={enforce or '(unset)'}",
        ),
    ]
    auth = client.AuthorizationV1Api(api)
    denied: list[str] = []
    for verb, resource, subresource, group in K8S_RIGHTS:
        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    namespace=JOB_NAMESPACE,
                    verb=verb,
                    resource=resource,
                    subresource=subresource or None,
                    group=group,
                )
            )
        )
        try:
            with api_call():
                answer = auth.create_self_subject_access_review(review, _request_timeout=_TIMEOUT_S)
        except ServiceError as exc:
            return [*results, Result("kubernetes", "services' rights", False, str(exc))]
        if answer.status is None or not answer.status.allowed:
            denied.append(f"{verb} {resource}{'/' + subresource if subresource else ''}")
    results.append(
        Result(
            "kubernetes",
            f"services' credentials may run jobs in {JOB_NAMESPACE}",
            not denied,
            f"denied: {', '.join(denied)}" if denied else f"{len(K8S_RIGHTS)} rights checked",
        )
    )
    return results


def check_nas(nas: NasSettings | None = None) -> list[Result]:
    """The door's folders exist; the services' state folder takes a write (when root)."""
    nas = nas or NasSettings()
    results = []
    for folder in (nas.submit_dir, nas.submitted_dir, nas.failed_dir):
        results.append(Result("nas", f"{folder} exists", folder.is_dir()))
    if os.geteuid() == 0:
        # Not in submit/: the watcher would take a test file there for a job.
        try:
            with tempfile.NamedTemporaryFile(dir=nas.state_dir, prefix=".check-") as probe:
                probe.write(b"x")
                probe.flush()
                os.fsync(probe.fileno())
            results.append(Result("nas", f"{nas.state_dir} writable", True))
        except OSError as exc:
            results.append(Result("nas", f"{nas.state_dir} writable", False, str(exc)))
    else:
        writable = os.access(nas.submit_dir, os.W_OK)
        results.append(Result("nas", f"{nas.submit_dir} writable by you", writable))
    return results


def check_registry() -> list[Result]:
    """Each registry the policy allows answers ``GET /v2/`` (401 counts: it is up)."""
    from shared.jobscript import load_policy, policy_path
    from shared.registry import RegistrySettings

    try:
        registries = load_policy(policy_path(fallback_to_repo=True)).allowed_registries
    except ServiceError as exc:
        return [Result("registry", "policy readable", False, str(exc))]
    plain = RegistrySettings().plain_http_hosts
    results = []
    for host in registries:
        url = f"{'http' if host in plain else 'https'}://{host}/v2/"
        try:
            with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
                results.append(
                    Result("registry", f"{host} answers", True, f"HTTP {response.status}")
                )
        except urllib.error.HTTPError as exc:
            results.append(
                Result("registry", f"{host} answers", exc.code == 401, f"HTTP {exc.code}")
            )
        except (urllib.error.URLError, OSError) as exc:
            results.append(Result("registry", f"{host} answers", False, str(exc)))
    return results


SMOKE_JOB = """#!/bin/sh
#SBATCH --time=2
#SBATCH --output={results}/%j.out
#K8S_IMAGE={image}
echo "slurmk8s check: hello from $(hostname)"
"""


def check_smoke(
    nas: NasSettings | None = None,
    *,
    image: str = "nas-hub.local:5407/alpine:latest",
    timeout_s: float = 240.0,
    sleep: Callable[[float], None] = time.sleep,
    euid: Callable[[], int] = os.geteuid,
) -> list[Result]:
    """Drop a hello job on the NAS as yourself; wait for its receipt to say finished."""
    nas = nas or NasSettings()
    if euid() == 0:
        refused = "run --smoke as a user: files owned by root are refused"
        return [Result("smoke", "hello job ran end to end", False, refused)]
    name = f"slurmk8s-check-{uuid.uuid4().hex[:8]}.sh"
    source = nas.submit_dir / name
    receipt = nas.submitted_dir / f"{name}.receipt.json"
    error = nas.failed_dir / f"{name}.error"
    try:
        source.write_text(SMOKE_JOB.format(results=nas.nas_root / "results", image=image))
    except OSError as exc:
        return [Result("smoke", "hello job dropped on the NAS", False, str(exc))]
    deadline = time.monotonic() + timeout_s
    last = "no receipt yet"
    while time.monotonic() < deadline:
        if error.is_file():
            return [Result("smoke", "hello job accepted", False, error.read_text().strip())]
        with contextlib.suppress(FileNotFoundError, ValueError):
            document = json.loads(receipt.read_text())
            last = f"job {document.get('job_id')} {document.get('status')}"
            if document.get("status") == "finished":
                ok = document.get("state") == "COMPLETED" and document.get("exit_code") == 0
                detail = f"{last}: {document.get('state')} exit {document.get('exit_code')}"
                return [Result("smoke", "hello job ran end to end", ok, detail)]
        sleep(1.0)
    return [Result("smoke", "hello job ran end to end", False, f"timed out: {last}")]


CHECKS: dict[str, Check] = {
    "broker": check_broker,
    "slurm": check_slurm,
    "kubernetes": check_kubernetes,
    "nas": check_nas,
    "registry": check_registry,
}


def run_checks(components: list[str], smoke: bool) -> Iterator[Result]:
    """The results of the chosen components' checks, in order (``services`` is the broker's)."""
    wanted = set(components) or set(COMPONENTS)
    for component, check in CHECKS.items():
        if component in wanted or (component == "broker" and "services" in wanted):
            for result in check():
                if result.component in wanted:
                    yield result
    if smoke or "smoke" in components:
        yield from check_smoke()


def command(args: argparse.Namespace) -> int:
    """``slurmk8s check``; exit 0 when every check passed."""
    results = []
    for result in run_checks(args.component or [], args.smoke):
        results.append(result)
        if not args.json:
            mark = "ok  " if result.ok else "FAIL"
            detail = (
                f"  ({result.detail})" if result.detail and (args.verbose or not result.ok) else ""
            )
            print(f"{mark} {result.component:<10} {result.name}{detail}", flush=True)
    failed = sum(not r.ok for r in results)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print(f"{len(results) - failed} passed, {failed} failed")
    return EXIT_FAILED if failed else EXIT_OK


def add_check_parser(commands: Any) -> None:
    """Add ``check`` to the CLI's subparsers."""
    check = commands.add_parser("check", help="is this deployment able to run jobs? (operators)")
    check.add_argument(
        "--component",
        action="append",
        choices=COMPONENTS,
        help="only this component's checks (repeatable); default: all but smoke",
    )
    check.add_argument("--verbose", "-v", action="store_true", help="details of passed checks too")
    check.add_argument("--smoke", action="store_true", help="also run a hello job end to end")
    check.add_argument("--json", action="store_true", help="JSON for scripts")
    check.set_defaults(func=command)
