"""The watcher's own settings (``WATCHER_*``); broker, NAS and telemetry settings are shared.

Parsed once in ``__main__`` and passed down. Every default says why it is what it is.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WatcherSettings(BaseSettings):
    """How the submit folder is watched and when a file counts as complete."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="WATCHER_")

    force_polling: Literal["auto", "true", "false"] = Field(
        default="auto",
        description="WATCHER_FORCE_POLLING. 'auto' polls when the submit folder is on a "
        "network filesystem (inotify never sees files written by other NFS/SMB clients) and "
        "uses inotify otherwise; 'true'/'false' override the mount table.",
    )
    poll_delay_ms: int = Field(
        default=1000,
        ge=50,
        description="WATCHER_POLL_DELAY_MS. Interval between polls when polling. Each poll "
        "stats every file in the tree (an RPC per file on NFS); 1 s is well under the "
        "stability window, so polling adds at most a second to detection.",
    )
    stability_window_s: float = Field(
        default=2.0,
        gt=0,
        description="WATCHER_STABILITY_WINDOW_S. A file is complete once its size, mtime and "
        "inode were seen unchanged this long. Writers (cp, scp, editors) touch the file far "
        "more often than every 2 s while writing; Camel's readLock=changed uses at least 1 s.",
    )
    kernel_completeness: bool = Field(
        default=True,
        description="WATCHER_KERNEL_COMPLETENESS. On a local filesystem, take a file as "
        "complete as soon as the kernel says no one holds it open for writing (a read lease "
        "is granted), instead of waiting out the stability window. Never on a network "
        "filesystem. Needs CAP_LEASE or owning the file; without, the window decides.",
    )
    network_stability_window_s: float = Field(
        default=5.0,
        gt=0,
        description="WATCHER_NETWORK_STABILITY_WINDOW_S. The window on NFS/SMB: the client's "
        "attribute cache can show size and mtime up to acregmin (3 s by default) late, so the "
        "local window is widened by that much.",
    )
    rescan_interval_s: float = Field(
        default=30.0,
        gt=0,
        description="WATCHER_RESCAN_INTERVAL_S. Full listing of the submit tree regardless of "
        "events: inotify queue overflow drops events silently in watchfiles, and NFS "
        "directory caches (acdirmin 30 s) hide new names for about that long anyway.",
    )
    tick_ms: int = Field(
        default=500,
        ge=50,
        le=5000,
        description="WATCHER_TICK_MS. How often the loop wakes without events to re-check "
        "files that are still settling and the rescan timer; it also bounds how long SIGTERM "
        "waits.",
    )
    forget_after_s: float = Field(
        default=600.0,
        ge=0,
        description="WATCHER_FORGET_AFTER_S. A published file's record is dropped once the "
        "file has been gone from submit/ this long. The delay outlasts NFS caches (acdirmax "
        "60 s) that could still list a file the validator already moved away.",
    )
    broker_retry_s: float = Field(
        default=5.0,
        gt=0,
        description="WATCHER_BROKER_RETRY_S. Pause before publishing again after RabbitMQ "
        "stayed unreachable through the publisher's own retries; the files wait in submit/.",
    )

    @property
    def forced_polling(self) -> bool | None:
        """``True``/``False`` when the mode is forced, ``None`` when the mount table decides."""
        return {"auto": None, "true": True, "false": False}[self.force_polling]
