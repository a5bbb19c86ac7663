"""The boundary to container registries: turning an image's tag into the digest it names now.

This module owns every call the services make to a registry's HTTP API (distribution's v2
API, which every OCI registry speaks), the choice of http or https per registry, the timeouts
of those calls, and the translation of their failures into the project's error taxonomy
(``shared.errors``). It only reads: it never pushes, deletes or pulls layers.

Why: a tag can be moved by whoever may push, between the moment a job is accepted and the
moment its Pod pulls (with pull policy ``Always``, on every Pod). Running
``host/name@sha256:<digest>`` instead makes the container runtime verify that it runs exactly
the manifest that was resolved, whatever happens to the tag afterwards.

Plain ``urllib`` is used on purpose: two requests (HEAD, maybe GET) need no session, retries
or connection pool, and the module then depends on nothing that only arrives transitively.
"""

from __future__ import annotations

import hashlib
import re
import time
import urllib.error
import urllib.request
from collections.abc import Collection
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from http.client import HTTPException, HTTPResponse
from typing import Final

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import PermanentError, TransientError
from shared.jobscript.images import ImageError, parse_image

#: What we accept, in order of preference: Docker schema 2 manifest and manifest list, OCI
#: manifest and index. A registry only returns a type the client accepts (distribution 2.8
#: answers 404 for an OCI-stored image to a client that does not list the OCI types).
MANIFEST_TYPES: Final = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
#: The registries served over plain http unless told otherwise: the lab's.
LAB_PLAIN_HTTP: Final = ("nas-hub.local:5407",)
#: distribution refuses manifests over 4 MiB; a bigger answer is not a manifest.
MAX_MANIFEST_BYTES: Final = 4 * 1024 * 1024
_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")
_USER_AGENT = "slurm-k8s-registry/1"


class RegistrySettings(BaseSettings):
    """How to reach the registries that job images come from."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    plain_http: str = Field(
        default=",".join(LAB_PLAIN_HTTP),
        alias="REGISTRY_PLAIN_HTTP",
        description="REGISTRY_PLAIN_HTTP: comma-separated host[:port] spoken to over plain "
        "http (the lab's registry); every other registry is https with verified certificates. "
        "Set it to '' at a site whose registry has TLS.",
    )
    timeout_s: float = Field(
        default=10.0,
        alias="REGISTRY_TIMEOUT",
        gt=0,
        description="REGISTRY_TIMEOUT: seconds one resolution may take in all (HEAD, then GET "
        "if needed).",
    )

    @property
    def plain_http_hosts(self) -> frozenset[str]:
        """The registries spoken to over http."""
        return frozenset(h.strip() for h in self.plain_http.split(",") if h.strip())


class InvalidImageReference(PermanentError):
    """The text is not an image reference that names its registry."""


class ImageNotFound(PermanentError):
    """The registry answers but has no such repository, tag or digest."""


class ImageAccessDenied(PermanentError):
    """The registry refuses to let us read the image (it wants credentials we do not have)."""


class RegistryProtocolError(PermanentError):
    """The registry's answer is not what the v2 API promises (bad digest, oversize body)."""


class RegistryUnavailable(TransientError):
    """The registry cannot be reached, times out, is overloaded or fails (5xx, 429)."""


@dataclass(frozen=True)
class Reference:
    """An image reference split into what the registry API needs.

    Attributes:
        registry: ``host[:port]`` as written.
        name: the repository path, e.g. ``team/train``.
        tag: the tag (``latest`` when neither tag nor digest was written), or None if pinned.
        digest: ``sha256:<64 hex>`` if the reference was already pinned.
    """

    registry: str
    name: str
    tag: str | None
    digest: str | None

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def pinned(self, digest: str) -> str:
        """``host[:port]/name@<digest>``."""
        return f"{self.registry}/{self.name}@{digest}"

    def __str__(self) -> str:
        if self.digest:
            return self.pinned(self.digest)
        return f"{self.registry}/{self.name}:{self.tag}"


def parse_reference(image: str) -> Reference:
    """Split ``host[:port]/name[:tag][@sha256:...]``; the tag defaults to ``latest``.

    A reference with both a tag and a digest is the digest's (as for container runtimes).

    Raises:
        InvalidImageReference: not a reference with a registry host.
    """
    try:
        ref = parse_image(image.strip())
    except ImageError as exc:
        raise InvalidImageReference(str(exc)) from exc
    if ref.digest:
        return Reference(ref.registry, ref.path, None, ref.digest)
    return Reference(ref.registry, ref.path, ref.tag or "latest", None)


def manifest_url(ref: Reference, plain_http: Collection[str] = LAB_PLAIN_HTTP) -> str:
    """The v2 API URL of the reference's manifest, http for the registries listed."""
    scheme = "http" if ref.registry in plain_http else "https"
    return f"{scheme}://{ref.registry}/v2/{ref.name}/manifests/{ref.reference}"


def resolve_digest(
    image: str, timeout_s: float, *, plain_http: Collection[str] = LAB_PLAIN_HTTP
) -> str:
    """The image as ``host[:port]/name@sha256:<digest>``, as its registry has it right now.

    A HEAD of the manifest usually suffices (``Docker-Content-Digest``); without that header
    (or with a non-sha256 one) the manifest is fetched and its sha256 computed. An image that
    is already pinned is checked to exist and returned in the same form.

    Args:
        image: ``host[:port]/name[:tag][@sha256:<hex>]``; no tag means ``latest``.
        timeout_s: bound on the whole resolution (every request gets what is left of it).
        plain_http: registries (``host[:port]``) spoken to over http; others use https.

    Raises:
        InvalidImageReference: ``image`` is not a reference naming a registry.
        ImageNotFound: no such repository, tag or digest (404).
        ImageAccessDenied: the registry wants credentials to read it (401, 403).
        RegistryProtocolError: the answer breaks the API's promises (e.g. a digest that does
            not match what was asked or what was sent).
        RegistryUnavailable: unreachable, timed out, 429 or 5xx; worth retrying later.
    """
    ref = parse_reference(image)
    url = manifest_url(ref, plain_http)
    deadline = time.monotonic() + timeout_s
    digest = _header_digest(_request("HEAD", url, ref, deadline)[0])
    if digest is None:
        headers, body = _request("GET", url, ref, deadline)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        sent = _header_digest(headers)
        if sent is not None and sent != digest:
            raise RegistryProtocolError(
                f"registry {ref.registry} sent a manifest for {ref} whose sha256 is {digest} "
                f"but labelled it {sent}"
            )
    if ref.digest is not None and digest != ref.digest:
        raise RegistryProtocolError(
            f"registry {ref.registry} answered {digest} when asked for {ref}"
        )
    return ref.pinned(digest)


def _header_digest(headers: dict[str, str]) -> str | None:
    value = headers.get("docker-content-digest", "").strip()
    return value if _SHA256.match(value) else None


def _request(
    method: str, url: str, ref: Reference, deadline: float
) -> tuple[dict[str, str], bytes]:
    """One request; (lower-cased headers, body). HEAD answers 405 → ({}, b"") (then GET)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise RegistryUnavailable(f"registry {ref.registry} did not answer for {ref} in time")
    request = urllib.request.Request(
        url,
        method=method,
        headers={"Accept": ", ".join(MANIFEST_TYPES), "User-Agent": _USER_AGENT},
    )
    try:
        with urllib.request.urlopen(request, timeout=left) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            body = _read_body(response, ref, deadline) if method == "GET" else b""
            return headers, body
    except urllib.error.HTTPError as exc:
        with exc:
            if method == "HEAD" and exc.code in (405, 501):
                return {}, b""  # HEAD not supported here: the caller falls back to GET
            raise _http_error(exc.code, exc.headers.get("Retry-After"), ref, url) from exc
    except (urllib.error.URLError, HTTPException, OSError) as exc:
        # URLError wraps refused connections and unresolvable names; socket timeouts are
        # OSErrors; HTTPException covers a peer that hangs up or speaks something else.
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise RegistryUnavailable(
                f"registry {ref.registry} timed out resolving {ref} ({url})"
            ) from exc
        raise RegistryUnavailable(
            f"registry {ref.registry} unreachable resolving {ref} ({url}): {reason}"
        ) from exc


def _read_body(response: HTTPResponse, ref: Reference, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read(65536):
        size += len(chunk)
        if size > MAX_MANIFEST_BYTES:
            raise RegistryProtocolError(
                f"registry {ref.registry} sent more than {MAX_MANIFEST_BYTES} bytes as the "
                f"manifest of {ref}"
            )
        if time.monotonic() > deadline:
            raise RegistryUnavailable(f"registry {ref.registry} too slow sending {ref}")
        chunks.append(chunk)
    return b"".join(chunks)


def _http_error(code: int, retry_after: str | None, ref: Reference, url: str) -> Exception:
    if code == 404:
        return ImageNotFound(f"image {ref} not found in the registry")
    if code in (401, 403):
        return ImageAccessDenied(
            f"registry {ref.registry} refused to let slurm-k8s read image {ref} (HTTP {code}); "
            "anonymous pull must be allowed for job images"
        )
    if code == 429 or code >= 500:
        return RegistryUnavailable(
            f"registry {ref.registry} answered HTTP {code} resolving {ref}",
            delay=_retry_after(retry_after),
        )
    return RegistryProtocolError(f"registry {ref.registry} answered HTTP {code} for {url}")


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (delta or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
