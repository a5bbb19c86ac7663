"""Container image references: ``host[:port]/path[:tag][@sha256:<64 hex>]``.

The grammar follows the distribution reference format (``distribution/reference``), but a
registry host is mandatory: Docker's implicit ``docker.io/library/`` prefix is exactly the
kind of surprise a policy of allowed registries must not have.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HOST = (
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"^(?P<registry>{_HOST}(?::[0-9]{{1,5}})?)/(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference."""

    registry: str
    path: str
    tag: str | None
    digest: str | None


class ImageError(ValueError):
    """The text is not a complete image reference with a registry."""


def parse_image(text: str) -> ImageRef:
    """Parse an image reference that names its registry.

    Raises:
        ImageError: with a message a user can act on.
    """
    first, slash, _rest = text.partition("/")
    # A registry is told apart from a repository namespace by a dot, a port or "localhost".
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        raise ImageError(
            f"image '{text}' does not name a registry; write it in full, "
            "e.g. nas-hub.local:5407/alpine:latest"
        )
    match = _REFERENCE.match(text)
    if match is None:
        raise ImageError(
            f"image '{text}' is not a valid reference "
            "(expected host[:port]/name[:tag][@sha256:digest], lowercase name)"
        )
    return ImageRef(
        registry=match["registry"], path=match["path"], tag=match["tag"], digest=match["digest"]
    )
