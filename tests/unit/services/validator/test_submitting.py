import os
import pwd
import resource
import subprocess
from pathlib import Path

import pytest

from shared import slurmctl
from shared.errors import TransientError
from shared.slurmctl import (
    DUPLICATE_TEXT,
    SubmitRefused,
    Submitter,
    error_lines,
    is_transient,
    key_of,
    match_key,
)

pytestmark = pytest.mark.unit
ME = pwd.getpwuid(os.getuid())
"""sbatch runs as an account the system knows: this test's own, wherever it runs."""


@pytest.mark.parametrize(
    "stderr",
    [
        "sbatch: error: Batch job submission failed: Unable to contact slurm controller "
        "(connect failure)",
        "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation",
        "sbatch: error: slurm_persist_conn_open_without_init: failed to open persistent "
        "connection to host:localhost:6819: Connection refused",
    ],
)
def test_controller_trouble_is_transient(stderr: str) -> None:
    assert is_transient(stderr)


@pytest.mark.parametrize(
    "stderr",
    [
        "sbatch: error: line 4: --uid is not allowed\n"
        "sbatch: error: Batch job submission failed: Unspecified error",
        "sbatch: error: Batch job submission failed: Invalid account or account/partition "
        "combination specified",
    ],
)
def test_refusals_are_permanent(stderr: str) -> None:
    assert not is_transient(stderr)


def test_error_lines_drop_the_prefix() -> None:
    assert error_lines("sbatch: error: line 4: bad\n\nsbatch: error: failed\n") == [
        "line 4: bad",
        "failed",
    ]


def test_keys_are_found_in_queue_and_accounting_listings() -> None:
    listing = (
        "12|slurmk8s-key=aaa\n13_[1-9]|slurmk8s-key=bbb\n14_2|slurmk8s-key=ccc\n15|\n"
        "16|slurmk8s-key=ddd; reason=OOMKilled\n17|slurmk8s-key=eeeX\n"
    )
    assert match_key(listing, "aaa") == 12
    assert match_key(listing, "bbb") == 13
    assert match_key(listing, "ccc") == 14
    assert match_key(listing, "ddd") == 16
    assert match_key(listing, "eee") is None
    assert match_key(listing, "zzz") is None


@pytest.mark.parametrize(
    ("comment", "key"),
    [
        ("slurmk8s-key=abc", "abc"),
        ("slurmk8s-key=abc; traceparent=00-" + "1" * 32 + "-" + "2" * 16 + "-01", "abc"),
        (" slurmk8s-key=abc; reason=OOMKilled", "abc"),
        ("x slurmk8s-key=abc", None),
        ("", None),
    ],
)
def test_the_key_is_the_comments_first_part(comment: str, key: str | None) -> None:
    assert key_of(comment) == key


class FakeRun:
    """Stands in for subprocess.run: answers by program name, records what was run."""

    def __init__(self, answers: dict[str, object]) -> None:
        self.answers = answers
        self.calls: list[tuple[list[str], dict[str, object]]] = []

    def __call__(self, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        self.calls.append((argv, kwargs))
        program = argv[argv.index("--", 4) + 1] if argv[0] == "prlimit" else argv[0]
        answer = self.answers[program]
        if isinstance(answer, BaseException):
            raise answer
        code, out, err = answer  # type: ignore[misc]
        return subprocess.CompletedProcess(argv, code, out, err)


def cli(monkeypatch: pytest.MonkeyPatch, answers: dict[str, object]) -> tuple[Submitter, FakeRun]:
    fake = FakeRun(answers)
    monkeypatch.setattr(slurmctl.subprocess, "run", fake)
    return Submitter(
        timeout_s=5, query_timeout_s=5, lookback_days=7, slurm_conf="/etc/s.conf"
    ), fake


def test_a_process_with_the_session_limit_passes_it_on_without_prlimit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limits = {resource.RLIMIT_NOFILE: (4096, 8192)}
    monkeypatch.setattr(slurmctl.resource, "getrlimit", limits.__getitem__)
    monkeypatch.setattr(slurmctl.resource, "setrlimit", limits.__setitem__)
    slurmctl.adopt_session_nofile()
    assert limits[resource.RLIMIT_NOFILE] == (1024, 8192)
    assert slurmctl.as_owner(ME, ["sbatch"]) == [
        "setpriv", f"--reuid={ME.pw_uid}", f"--regid={ME.pw_gid}", "--init-groups", "--",
        "sbatch",
    ]  # fmt: skip


def test_submit_runs_sbatch_as_the_owner_with_the_bytes_on_stdin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slurm, fake = cli(monkeypatch, {"sbatch": (0, b"42;cluster\n", b"")})
    monkeypatch.setattr(slurmctl.resource, "getrlimit", lambda _: (4096, 8192))
    job = slurm.submit(b"#!/bin/sh\n", user=ME.pw_name, key="k1", cwd=Path("/h/a"), job_name="x")
    assert job == 42
    argv, kwargs = fake.calls[0]
    # As runuser left it: the soft open-files limit pam_limits set (sbatch copies it into the
    # job), the account's groups, gid and uid by number; the rest is inherited.
    assert argv[:9] == [
        "prlimit", "--nofile=1024:", "--",
        "setpriv", f"--reuid={ME.pw_uid}", f"--regid={ME.pw_gid}", "--init-groups", "--",
        "sbatch",
    ]  # fmt: skip
    assert "--parsable" in argv
    assert "--comment=slurmk8s-key=k1" in argv
    assert "--job-name=x" in argv
    assert kwargs["input"] == b"#!/bin/sh\n"
    assert kwargs["cwd"] == Path("/h/a")
    env = kwargs["env"]
    assert isinstance(env, dict)
    assert not [k for k in env if k.startswith("SBATCH_")]
    assert env["SLURM_CONF"] == "/etc/s.conf"
    assert env["USER"] == env["LOGNAME"] == ME.pw_name
    assert env["HOME"] == ME.pw_dir  # what runuser set, so the job's HOME is unchanged


def test_submit_for_a_name_without_an_account_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    slurm, fake = cli(monkeypatch, {"sbatch": (0, b"42\n", b"")})
    with pytest.raises(SubmitRefused, match="no account"):
        slurm.submit(b"", user="no-such-user-h8", key="k1", cwd=Path("/"), job_name="")
    assert fake.calls == []


def test_submit_carries_the_trace_context_after_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRun({"sbatch": (0, b"42\n", b"")})
    monkeypatch.setattr(slurmctl.subprocess, "run", fake)
    traceparent = f"00-{'c' * 32}-{'d' * 16}-01"
    slurm = Submitter(timeout_s=5, query_timeout_s=5, lookback_days=7, trace=lambda: traceparent)
    slurm.submit(b"", user=ME.pw_name, key="k1", cwd=Path("/"), job_name="")
    assert f"--comment=slurmk8s-key=k1; traceparent={traceparent}" in fake.calls[0][0]
    # The key stays the comment's first field: finding the job by its key still works.
    assert match_key(f"42|slurmk8s-key=k1; traceparent={traceparent}", "k1") == 42


def test_submit_failures_are_translated(monkeypatch: pytest.MonkeyPatch) -> None:
    down = b"sbatch: error: Batch job submission failed: Unable to contact slurm controller\n"
    slurm, _ = cli(monkeypatch, {"sbatch": (1, b"", down)})
    with pytest.raises(TransientError):
        slurm.submit(b"", user=ME.pw_name, key="k", cwd=Path("/"), job_name="")
    refused = (
        b"sbatch: error: line 2: asks for 9 CPUs\nsbatch: error: Batch job submission failed\n"
    )
    slurm, _ = cli(monkeypatch, {"sbatch": (1, b"", refused)})
    with pytest.raises(SubmitRefused) as exc:
        slurm.submit(b"", user=ME.pw_name, key="k", cwd=Path("/"), job_name="")
    assert exc.value.reasons == ("line 2: asks for 9 CPUs", "Batch job submission failed")
    duplicate = f"sbatch: error: file: {DUPLICATE_TEXT} (abc); not submitting it twice\n"
    slurm, _ = cli(monkeypatch, {"sbatch": (1, b"", duplicate.encode())})
    with pytest.raises(TransientError):
        slurm.submit(b"", user=ME.pw_name, key="k", cwd=Path("/"), job_name="")
    slurm, _ = cli(monkeypatch, {"sbatch": subprocess.TimeoutExpired("sbatch", 5)})
    with pytest.raises(TransientError):
        slurm.submit(b"", user=ME.pw_name, key="k", cwd=Path("/"), job_name="")


def test_find_job_needs_accounting_only_after_an_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers: dict[str, object] = {
        "squeue": (0, b"7|slurmk8s-key=other\n", b""),
        "sacct": (1, b"", b"sacct: error: slurmdbd: Connection refused\n"),
    }
    slurm, _ = cli(monkeypatch, answers)
    assert slurm.find_job(user="a", key="k", attempted=False) is None
    with pytest.raises(TransientError):
        slurm.find_job(user="a", key="k", attempted=True)
    answers["sacct"] = (0, b"9|slurmk8s-key=k\n", b"")
    assert slurm.find_job(user="a", key="k", attempted=True) == 9
    answers["squeue"] = (1, b"", b"squeue: error: Unable to contact slurm controller\n")
    with pytest.raises(TransientError):
        slurm.find_job(user="a", key="k", attempted=False)


def test_duplicate_text_is_the_one_job_submit_lua_prints() -> None:
    lua = (Path(__file__).parents[4] / "slurm" / "job_submit.lua").read_text()
    assert f'M.DUPLICATE_TEXT = "{DUPLICATE_TEXT}"' in lua


def test_stdout_path_asks_for_the_one_job_and_expands_its_pattern(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answer = (0, b"/nas/home/alice/out-%x-%j-%u.txt\n", b"")
    slurm, fake = cli(monkeypatch, {"squeue": answer})
    path = slurm.stdout_path(42, user="alice", name="hello.sh")
    assert path == "/nas/home/alice/out-hello.sh-42-alice.txt"
    argv, _ = fake.calls[0]
    assert "--jobs=42" in argv
    assert "--Format=STDOUT:0" in argv
    assert "--json" not in argv  # 22.05 ignores --jobs with --json and lists every job
    gone = (1, b"", b"slurm_load_jobs error: Invalid job id specified\n")
    slurm, _ = cli(monkeypatch, {"squeue": gone})
    assert slurm.stdout_path(42, user="alice", name="x") is None
    slurm, _ = cli(monkeypatch, {"squeue": (0, b"", b"")})
    assert slurm.stdout_path(42, user="alice", name="x") is None
