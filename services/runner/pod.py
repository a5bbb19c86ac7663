"""The runner's Kubernetes boundary: its own Pod only, through the launcher's handoff.

The credential is a token bound to the Pod, allowed (by the run's Role) to get, watch and
delete this one Pod and read its log; nothing else is reachable with it. The kubernetes
package is imported here and only once the credential exists, to keep the step's start fast.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from shared.jobpods import JOB_NAMESPACE
from shared.kube import KubeNotFound, api_call, api_client
from shared.podfacts import PodFacts, facts_of

CONTAINER = "job"
READ_TIMEOUT = (5.0, 15.0)
_CHUNK = 64 * 1024


class RunPod:
    """One Pod, through a Pod-bound kubeconfig.

    Args:
        kubeconfig: the handoff file.
        name: the Pod's name.
        namespace: the jobs namespace.
    """

    def __init__(self, kubeconfig: Path, name: str, namespace: str = JOB_NAMESPACE) -> None:
        from kubernetes import client

        self._api = api_client(kubeconfig)
        self._core = client.CoreV1Api(self._api)
        self.name = name
        self.namespace = namespace

    def read(self) -> PodFacts | None:
        """The Pod's facts, or None if it is gone."""
        try:
            with api_call():
                pod = self._core.read_namespaced_pod(
                    self.name, self.namespace, _request_timeout=READ_TIMEOUT
                )
        except KubeNotFound:
            return None
        return facts_of(pod)

    def delete(self, grace_s: int) -> None:
        """Delete the Pod with a grace period; gone already is fine."""
        try:
            with api_call():
                self._core.delete_namespaced_pod(
                    self.name,
                    self.namespace,
                    grace_period_seconds=grace_s,
                    _request_timeout=READ_TIMEOUT,
                )
        except KubeNotFound:
            pass

    def open_log(self, follow: bool, since_s: int | None, stream: str | None) -> Iterable[bytes]:
        """The container's log with timestamps, as chunks; ``stream`` Stdout/Stderr/None."""
        kwargs: dict[str, Any] = {
            "container": CONTAINER,
            "follow": follow,
            "timestamps": True,
            "_preload_content": False,
            # A silent job must not look like a dead connection forever: after 5 quiet
            # minutes the read times out and the follower reconnects (deduplicated).
            "_request_timeout": (10.0, 300.0),
        }
        if since_s is not None:
            kwargs["since_seconds"] = since_s
        if stream is not None:
            kwargs["stream"] = stream
        with api_call():
            response = self._core.read_namespaced_pod_log(self.name, self.namespace, **kwargs)
        return _chunks(response)


def _chunks(response: Any) -> Iterator[bytes]:
    try:
        with api_call():
            yield from response.stream(_CHUNK, decode_content=True)
    finally:
        response.release_conn()
