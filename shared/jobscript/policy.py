"""The submit policy: one settings file (``slurm/policy.conf``) read by both doors.

The file is deliberately simple (``key = value`` lines, space-separated lists, ``#`` comment
lines) so that ``slurm/job_submit.lua`` can read it with a dozen lines of Lua inside slurmctld:
one source of truth, two readers. Keys this model does not know are ignored, so other
components may keep their settings in the same file; a known key with a bad value is an error.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.errors import ConfigError

POLICY_ENV = "SLURMK8S_POLICY"
#: Where the lab installs the file; ``SLURMK8S_POLICY`` overrides it.
INSTALLED_PATH = Path("/etc/slurm-k8s/policy.conf")
#: The repository's copy, used by the CLI when nothing is installed (a developer's checkout).
REPO_PATH = Path(__file__).resolve().parents[2] / "slurm" / "policy.conf"


class Policy(BaseModel):
    """Limits and allowed places for jobs entering through either door."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    allowed_registries: tuple[str, ...] = Field(
        default=("nas-hub.local:5407",), description="host[:port] a #K8S_IMAGE may name."
    )
    max_cpus: int = Field(default=2, ge=1)
    max_mem_mb: int = Field(default=16000, ge=1)
    max_gpus: int = Field(default=4, ge=0)
    max_nodes: int = Field(default=1, ge=1)
    max_array_tasks: int = Field(default=100, ge=1)
    max_script_bytes: int = Field(
        default=1_048_576, ge=1, description="sbatch's own limit is 4 MB; ours is smaller."
    )
    max_shm_mb: int = Field(default=8192, ge=0)
    writable_roots: tuple[str, ...] = Field(
        default=("/mnt/test-k8s/results", "/mnt/test-k8s/home/%u"),
        description="--output/--error/--input/--chdir must resolve under one of these; "
        "%u is the user's name.",
    )
    script_roots: tuple[str, ...] = Field(
        default=("/mnt/test-k8s",),
        description="#K8S_SCRIPT must name a file under one of these (the NAS).",
    )
    allow_root_owned_files: bool = False
    min_uid: int = Field(
        default=1000,
        ge=0,
        description="Jobs (and NAS files) of accounts below this uid are refused: root and "
        "system accounts (daemon, www-data, ...) never run user code.",
    )
    max_uid: int = Field(
        default=60000,
        ge=0,
        description="Jobs (and NAS files) of accounts above this uid are refused: Debian's "
        "UID_MAX; nobody (65534), which NFS gives root's files under root_squash, is above.",
    )
    bash_syntax_check: bool = Field(
        default=True, description="Run `bash -n` on scripts whose #! names sh or bash."
    )

    @field_validator("writable_roots", "script_roots")
    @classmethod
    def _absolute(cls, roots: tuple[str, ...]) -> tuple[str, ...]:
        for root in roots:
            if not root.startswith("/"):
                raise ValueError(f"root {root!r} is not an absolute path")
        return roots

    def system_account(self, uid: int) -> bool:
        """Whether ``uid`` is root's or a system account's (outside min_uid..max_uid)."""
        return uid == 0 or uid < self.min_uid or uid > self.max_uid

    def roots_for(self, user: str) -> tuple[str, ...]:
        """The writable roots with ``%u`` replaced by the user's name."""
        return tuple(root.replace("%u", user) for root in self.writable_roots)


_LIST_KEYS = {"allowed_registries", "writable_roots", "script_roots"}


def parse_policy(text: str) -> Policy:
    """Build a policy from the file format.

    Raises:
        ConfigError: a line is not ``key = value`` or a value is invalid.
    """
    values: dict[str, object] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key:
            raise ConfigError(f"policy line {number}: expected 'key = value', got {raw!r}")
        values[key] = tuple(value.split()) if key in _LIST_KEYS else value
    try:
        return Policy.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"invalid policy: {exc}") from exc


def policy_path(*, fallback_to_repo: bool = False) -> Path:
    """Where the policy is read from: ``$SLURMK8S_POLICY``, else the installed file.

    Args:
        fallback_to_repo: for the CLI on a developer machine: use the repository's copy when
            neither the variable nor the installed file exists.
    """
    env = os.environ.get(POLICY_ENV)
    if env:
        return Path(env)
    if fallback_to_repo and not INSTALLED_PATH.exists():
        return REPO_PATH
    return INSTALLED_PATH


def load_policy(path: Path) -> Policy:
    """Read and parse a policy file.

    Raises:
        ConfigError: the file cannot be read or is invalid.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read policy {path}: {exc.strerror}") from exc
    return parse_policy(text)
