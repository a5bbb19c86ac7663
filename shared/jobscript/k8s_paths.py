"""``#K8S_WORKDIR`` and ``#K8S_SCRIPT``: the path directives, checked alike at both doors.

Every path in a job file is hostile. Both must be absolute, without a ``..`` component and
without control characters (``_safe``). ``#K8S_WORKDIR`` is only where the container starts:
the run shim enters it as the user, so nothing more is checked here.

``#K8S_SCRIPT`` names a program on the NAS; it must lie under one of ``script_roots`` and be a
regular file its owner can read. The check runs as root (validator, slurmctld, launcher), so it
decides "can the owner read it" from mode bits, the way the kernel would for that user: the
owner class if the file's uid is the user's, else the group class if the file's gid is one of
the user's groups (primary and supplementary), else the other class. Every directory from the
root down must be a real directory (not a symlink) the user may search, and the file itself
must not be a symlink: root never reports on anything the user could not ``lstat`` themselves
(a missing file inside a folder they cannot enter is "cannot be read", not "does not exist").
POSIX ACLs are not consulted; the kernel decides again when the job reads the file.

``job_submit.lua`` mirrors this walk with one ``stat`` per component (``M.script_walk``).
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Callable
from dataclasses import dataclass

UNKNOWN = "unknown"
"""What a walk sees of a path this process may not ``stat`` (slurmctld runs as SlurmUser, not
root): the check cannot decide there and lets the job through; the launcher (root) checks again
before any Pod."""
#: What a walk sees of one path: (st_mode, st_uid, st_gid), None when it does not exist, or
#: ``UNKNOWN``.
Seen = tuple[int, int, int] | str | None


@dataclass(frozen=True)
class Account:
    """The job owner as the kernel would see them."""

    uid: int
    groups: frozenset[int]


def host_account(user: str) -> Account:
    """The user's uid and groups from this host (uid -1 and no groups when unknown)."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return Account(-1, frozenset())
    return Account(entry.pw_uid, frozenset(os.getgrouplist(user, entry.pw_gid)))


def host_stat(path: str, follow: bool) -> Seen:
    """``stat``/``lstat`` reduced to what the walk needs."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError:
        return UNKNOWN
    return st.st_mode, st.st_uid, st.st_gid


MAX_SCRIPT_DEPTH = 32
"""Folders a ``#K8S_SCRIPT`` may go down: the walk costs one ``stat`` each, and slurmctld waits
for the walk under its job lock."""


def safe_path(value: str) -> bool:
    """Absolute, no ``..`` component, no control character."""
    return (
        value.startswith("/")
        and ".." not in value.split("/")
        and not any(ord(c) < 32 or ord(c) == 127 for c in value)
    )


def allowed(seen: tuple[int, int, int], account: Account, bit: int) -> bool:
    """Whether the class the user falls in has ``bit`` (4 read, 1 search/execute)."""
    mode, uid, gid = seen
    if uid == account.uid:
        shift = 6
    elif gid in account.groups:
        shift = 3
    else:
        shift = 0
    return bool((mode >> shift) & bit)


def under_root(value: str, roots: tuple[str, ...]) -> str | None:
    """The root (normalised, no trailing slash) that ``value`` lies strictly under, or None."""
    for root in roots:
        top = "/" + root.strip("/") if root.strip("/") else ""
        if value.startswith(top + "/") and value != top + "/":
            return top or "/"
    return None


def _form(value: str, roots: tuple[str, ...]) -> tuple[str | None, str]:
    """The root ``value`` lies under, or None and why its form is refused."""
    if not safe_path(value):
        return None, "must be an absolute path without '..' or control characters"
    if value.count("/") > MAX_SCRIPT_DEPTH:
        return None, f"is more than {MAX_SCRIPT_DEPTH} folders deep"
    root = under_root(value, roots)
    if root is None:
        return None, f"is outside the folders programs may come from ({', '.join(roots)})"
    return root, ""


def script_problem(
    value: str,
    roots: tuple[str, ...],
    user: str,
    account: Account,
    stat_path: Callable[[str, bool], Seen] = host_stat,
) -> str | None:
    """Why ``#K8S_SCRIPT=value`` is refused for ``user``, or None (message without prefix)."""
    shown = f"#K8S_SCRIPT '{value}'"
    root, why = _form(value, roots)
    if root is None:
        return f"{shown} {why}"
    parts = [p for p in value[len(root) :].split("/") if p]
    current = root
    seen = stat_path(current, True)
    for index, part in enumerate(parts):
        if seen == UNKNOWN:
            return None
        if not isinstance(seen, tuple) or not stat.S_ISDIR(seen[0]):
            return f"{shown} does not exist"
        if not allowed(seen, account, 1):
            return f"{shown} cannot be read by {user} (no access to {current})"
        current = current.rstrip("/") + "/" + part
        seen = stat_path(current, False)
        if isinstance(seen, tuple) and stat.S_ISLNK(seen[0]):
            last = index == len(parts) - 1
            what = "is a symlink" if last else f"goes through the symlink {current}"
            return f"{shown} {what}; name the file itself"
    if seen == UNKNOWN:
        return None
    if not isinstance(seen, tuple):
        return f"{shown} does not exist"
    if not stat.S_ISREG(seen[0]):
        return f"{shown} is not a regular file"
    if not allowed(seen, account, 4):
        return f"{shown} cannot be read by {user} (mode {stat.S_IMODE(seen[0]):04o})"
    return None
