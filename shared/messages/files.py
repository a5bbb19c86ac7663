"""Messages about job files seen in the NAS submit folder."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.messages.base import MessageBody


class FileDetected(MessageBody):
    """A complete (size and mtime stable) job file is waiting in the submit folder."""

    type: Literal["file.detected"] = "file.detected"
    path: str = Field(description="Absolute path of the file in the submit folder.")
    size: int = Field(ge=0)
    mtime_ns: int
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="The content's sha256; for a file over the size limit, which is never "
        "read, a digest of its identity (path, inode, size, mtime): see docs/watcher.md.",
    )
    owner_uid: int = Field(ge=0)

    @property
    def idempotency_key(self) -> str:
        """The same path with the same content is one submission."""
        return f"{self.path}:{self.sha256}"


def shown(text: str) -> str:
    r"""Text read from a user's file or file name, fit for a message, a log line or a reply.

    Files and names are read with ``surrogateescape`` (the shell and the filesystem do not
    care about encodings), but messages, logs, receipts and error files are UTF-8: a raw
    surrogate there cannot be written, and the file would never be answered. A byte that is
    not UTF-8 is shown as ``\xe9``.
    """
    return text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")
