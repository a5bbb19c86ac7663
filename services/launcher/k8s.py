"""The launcher's Kubernetes boundary: create-or-get each run object, and the handoff file.

Creates are idempotent: 409 (the object exists, e.g. a redelivered event or a crash between
two creates) reads the existing object instead, and adopts it only if it carries every label
of this run (job id, restart, user, uid, submit time): an object left by another job under the
same name (slurmctld reuses ids after losing its state) is never handed to this one.

The handoff is a kubeconfig holding a token from the TokenRequest API, bound to the run's Pod
(it stops working when the Pod is deleted) and scoped by the run's Role to that Pod. It is
written where only its owner can read it: a temporary file opened with O_EXCL|O_NOFOLLOW (no
symlink or pre-created file can redirect root's write), chowned to the job's uid:gid, mode
0400, then renamed into place. A refused run gets a ``.refused`` file there instead, with
the reason its batch step prints.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client

from services.launcher.handlers import Created
from services.launcher.podspec import Manifest, RunSpec
from shared.errors import PermanentError, TransientError
from shared.fileio import write_all
from shared.jobpods import JOB_NAMESPACE, handoff_dir, handoff_path, refusal_path
from shared.kube import KubeConflict, KubeNotFound, RateLimiter, api_call
from shared.messages import JobStarted

REQUEST_TIMEOUT = (5.0, 30.0)
"""(connect, read) seconds: a starting or wedged API server must not hang the handler."""

HANDOFF_DIR_MODE = 0o711
"""Users may open their own file by name but not list the others'."""


class ForeignObject(PermanentError):
    """An object with the run's name exists but belongs to another job or user."""


def check_adoptable(manifest: Manifest, existing: Any) -> None:
    """Adopt an existing object only if it carries every label this run would give it.

    Raises:
        ForeignObject: a label differs or is missing (the Pod's uid is also compared).
    """
    wanted: dict[str, str] = manifest["metadata"]["labels"]
    meta = getattr(existing, "metadata", None)
    labels = (getattr(meta, "labels", None) or {}) if meta is not None else {}
    wrong = sorted(key for key, value in wanted.items() if labels.get(key) != value)
    if manifest["kind"] == "Pod":
        context = getattr(getattr(existing, "spec", None), "security_context", None)
        if getattr(context, "run_as_user", None) != manifest["spec"]["securityContext"].get(
            "runAsUser"
        ):
            wrong.append("securityContext.runAsUser")
    if wrong:
        name = manifest["metadata"]["name"]
        raise ForeignObject(
            f"a {manifest['kind']} named {name} already exists for another job "
            f"(differs in {', '.join(wrong)}); it is not adopted"
        )


class KubeRuns:
    """``ClusterPort`` over the Kubernetes API.

    Args:
        api: an API client (``shared.kube.api_client``).
        limiter: client-side rate limit shared by every call.
        state_dir: the services' bookkeeping folder on the NAS (``NasSettings.state_dir``).
        api_server: URL for the batch step; "" means this client's own.
        namespace: the jobs namespace.
    """

    def __init__(
        self,
        api: client.ApiClient,
        limiter: RateLimiter,
        state_dir: Path,
        api_server: str = "",
        namespace: str = JOB_NAMESPACE,
    ) -> None:
        self._api = api
        self._core = client.CoreV1Api(api)
        self._rbac = client.RbacAuthorizationV1Api(api)
        self._limiter = limiter
        self._state_dir = state_dir
        self._api_server = api_server
        self._namespace = namespace

    def _create_or_read(
        self, manifest: Manifest, create: Callable[[], Any], read: Callable[[], Any]
    ) -> Any:
        self._limiter.acquire()
        try:
            with api_call():
                return create()
        except KubeConflict:
            return self._read_adoptable(manifest, read)

    def _read_adoptable(self, manifest: Manifest, read: Callable[[], Any]) -> Any:
        """The existing object, checked to be the one ``manifest`` describes (ours)."""
        self._limiter.acquire()
        with api_call():
            existing = read()
        check_adoptable(manifest, existing)
        return existing

    def ensure(self, manifest: Manifest) -> str:
        """Create the object unless it exists; return its uid.

        Raises:
            TransientError: the API is unreachable or overloaded.
            PermanentError: the API refused the object.
        """
        kind, name, ns = manifest["kind"], manifest["metadata"]["name"], self._namespace
        core, rbac = self._core, self._rbac
        calls: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
            "ServiceAccount": (
                lambda: core.create_namespaced_service_account(
                    ns,
                    client.V1ServiceAccount.model_validate(manifest),
                    _request_timeout=REQUEST_TIMEOUT,
                ),
                lambda: core.read_namespaced_service_account(
                    name, ns, _request_timeout=REQUEST_TIMEOUT
                ),
            ),
            "ConfigMap": (
                lambda: core.create_namespaced_config_map(
                    ns,
                    client.V1ConfigMap.model_validate(manifest),
                    _request_timeout=REQUEST_TIMEOUT,
                ),
                lambda: core.read_namespaced_config_map(name, ns, _request_timeout=REQUEST_TIMEOUT),
            ),
            "Role": (
                lambda: rbac.create_namespaced_role(
                    ns, client.V1Role.model_validate(manifest), _request_timeout=REQUEST_TIMEOUT
                ),
                lambda: rbac.read_namespaced_role(name, ns, _request_timeout=REQUEST_TIMEOUT),
            ),
            "RoleBinding": (
                lambda: rbac.create_namespaced_role_binding(
                    ns,
                    client.V1RoleBinding.model_validate(manifest),
                    _request_timeout=REQUEST_TIMEOUT,
                ),
                lambda: rbac.read_namespaced_role_binding(
                    name, ns, _request_timeout=REQUEST_TIMEOUT
                ),
            ),
        }
        create, read = calls[kind]
        obj = self._create_or_read(manifest, create, read)
        return str(obj.metadata.uid)

    def ensure_pod(self, manifest: Manifest, *, create: bool = True) -> Created | None:
        """Create the Pod unless it exists; its uid and phase.

        ``create`` False: only an existing Pod is answered (checked as ours), None if none.
        """
        name, ns = manifest["metadata"]["name"], self._namespace

        def read() -> Any:
            return self._core.read_namespaced_pod(name, ns, _request_timeout=REQUEST_TIMEOUT)

        if create:
            obj = self._create_or_read(
                manifest,
                lambda: self._core.create_namespaced_pod(
                    ns, client.V1Pod.model_validate(manifest), _request_timeout=REQUEST_TIMEOUT
                ),
                read,
            )
        else:
            try:
                obj = self._read_adoptable(manifest, read)
            except KubeNotFound:
                return None
        phase = obj.status.phase if obj.status is not None else ""
        return Created(uid=str(obj.metadata.uid), phase=phase or "Pending")

    def token(self, name: str, pod_uid: str, lifetime_s: int) -> str:
        """A token of the run's ServiceAccount, bound to its Pod."""
        body = client.AuthenticationV1TokenRequest.model_validate(
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "audiences": [],
                    "expirationSeconds": lifetime_s,
                    "boundObjectRef": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": name,
                        "uid": pod_uid,
                    },
                },
            }
        )
        self._limiter.acquire()
        with api_call():
            answer = self._core.create_namespaced_service_account_token(
                name, self._namespace, body, _request_timeout=REQUEST_TIMEOUT
            )
        if answer.status is None or not answer.status.token:
            raise TransientError(f"TokenRequest for {name} returned no token")
        return answer.status.token

    def handoff(self, spec: RunSpec, pod_uid: str, lifetime_s: int) -> None:
        """Write the run's kubeconfig for the batch step (owner uid:gid, mode 0400)."""
        token = self.token(spec.name, pod_uid, lifetime_s)
        text = kubeconfig_text(
            server=self._api_server or str(self._api.configuration.host),
            ca_data=_ca_data(self._api.configuration),
            token=token,
            namespace=self._namespace,
            user=spec.name,
        )
        write_owned_file(
            handoff_path(self._state_dir, spec.job_id, spec.restart_count),
            text.encode(),
            spec.uid,
            spec.gid,
        )

    def handed_over(self, spec: RunSpec) -> bool:
        """Whether the run's handoff file exists (written once its Pod was created)."""
        return handoff_path(self._state_dir, spec.job_id, spec.restart_count).exists()

    def refuse(self, event: JobStarted, reason: str) -> None:
        """Leave the reason where the run's batch step (``event.uid``) looks for its handoff."""
        write_owned_file(
            refusal_path(self._state_dir, event.job_id, event.restart_count),
            reason.encode(),
            event.uid,
            event.gid,
        )


def _ca_data(configuration: Any) -> str:
    path = getattr(configuration, "ssl_ca_cert", None)
    if not path:
        return ""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def kubeconfig_text(*, server: str, ca_data: str, token: str, namespace: str, user: str) -> str:
    """A minimal kubeconfig (JSON is valid YAML, and needs no YAML library to write)."""
    cluster: dict[str, Any] = {"server": server}
    if ca_data:
        cluster["certificate-authority-data"] = ca_data
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "slurm-k8s", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": "run",
                "context": {"cluster": "slurm-k8s", "user": user, "namespace": namespace},
            }
        ],
        "current-context": "run",
    }
    return json.dumps(doc, indent=2) + "\n"


def write_owned_file(path: Path, data: bytes, uid: int, gid: int) -> None:
    """Atomically put ``data`` at ``path``, owned by uid:gid, mode 0400 (root writes it)."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    if directory == handoff_dir(directory.parent):
        os.chmod(directory, HANDOFF_DIR_MODE)
    tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        write_all(fd, data)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, 0o400)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.rename(tmp, path)
