"""Issue 7 through the `sbatch` door, as an attacker would try it on the lab's real slurmctld.

Two ordinary users (alice, bob), real sbatch, real job_submit.lua (installed by
lab/slurm/install-hooks.sh). Each test checks that the attack is refused and that the harm did
not happen: no job was queued, other users were not stalled, the job's values did not change.

* Controller stall: bob's ~1 MB pathological scripts (at and just under max_script_bytes, and
  just over) while alice runs squeue and sbatch --hold: each of alice's commands answers
  within 2 s (the issue's bound; the stall was 5-10 s). bench/lua_checker.py has the figures.
* Forged wrapper: a script that already looks like slurm-k8s's wrapper is refused, plain or not;
  an accepted job is marked in AdminComment, which its owner cannot change.
* Comment: a slurm-k8s job's comment can only be the validator's key; the owner's
  `scontrol update` cannot take a marked job outside the policy.
* Root and system accounts cannot submit slurm-k8s jobs (they would hang until their time limit).
* A byte-order mark is refused (by sbatch's own check first, else by ours).
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.jobscript.policy import REPO_PATH, load_policy
from shared.jobscript.wrapping import ACCEPTED_MARK, WRAPPER_HEAD, wrap_script

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
HELLO = (REPO / "examples" / "hello.sh").read_bytes()
LIMIT = load_policy(REPO_PATH).max_script_bytes
HEAD = "#!/bin/bash\n#K8S_IMAGE=nas-hub.local:5407/alpine:latest\n"
STALL_BOUND_S = 2.0  # the generous bound for another user's squeue / sbatch
WRAPPER_TEXT = "which only slurm-k8s's own wrapper may carry"
MIN_UID_TEXT = "slurm-k8s jobs run as their owner; root and system accounts (uid < 1000 or > 60000)"
COMMENT_TEXT = "--comment is not allowed: slurm-k8s records its submission key in the job comment"


def sized(size: int, unit: str, head: str = HEAD, tail: str = "echo hi\n") -> bytes:
    """``head`` + ``unit`` repeated + a filler comment + ``tail``: exactly ``size`` bytes."""
    room = size - len(head) - len(tail)
    body = unit * ((room - 4) // len(unit))
    filler = room - len(body)
    pad = "#" + " " * (filler - 2) + "\n" if filler >= 2 else "\n" * filler
    data = (head + body + pad + tail).encode()
    assert len(data) == size
    return data


def one_line(size: int, start: str, word: str) -> bytes:
    room = size - len(HEAD) - len(start) - len("\necho hi\n")
    return (HEAD + start + word * (room // len(word)) + "\necho hi\n").encode()


# name -> (script, a text bob is told, or None when the job is accepted)
ATTACKS: dict[str, tuple[bytes, str | None]] = {
    "outp-just-under": (sized(LIMIT - 100, "#SBATCH --outp=/x\n"), "are listed)"),
    "outp-at-limit": (sized(LIMIT, "#SBATCH --outp=/x\n"), "are listed)"),
    "outp-just-over": (
        sized(LIMIT + 1, "#SBATCH --outp=/x\n"),
        f"the file is {LIMIT + 1} bytes; the limit is {LIMIT} bytes",
    ),
    "job-name-repeated": (sized(LIMIT - 100, "#SBATCH -J x\n"), None),
    # One ~1 MB line. (Not ` -Z` x 350,000: sbatch's own client refuses an unknown option, after
    # more than a minute of its own CPU, before slurmctld sees anything.)
    "long-path-one-line": (one_line(LIMIT - 100, "#SBATCH -o /x/", "y"), "is outside the folders"),
    "long-quoted-one-line": (
        one_line(LIMIT - 100, '#SBATCH -o "/x', " y")[: -len("\necho hi\n")] + b'"\necho hi\n',
        "is outside the folders",
    ),
    # Blanks inside one #K8S_ line: the old trim() backtracked over them (100 KB took 45 s).
    "k8s-line-of-blanks": (
        one_line(LIMIT - 100, "#K8S_SHM=1", " ")[: -len("\necho hi\n")] + b"x\necho hi\n",
        "#K8S_SHM: ",
    ),
    "many-k8s-lines": (sized(LIMIT - 100, "#K8S_FOO=1\n"), "unknown directive #K8S_FOO"),
    "late-k8s-lines": (
        sized(LIMIT - 100, "#K8S_X=1\n", head=HEAD + "echo\n"),
        "comes after the first command",
    ),
}


def home(lab_env: dict[str, str], user: str) -> Path:
    return Path(lab_env.get("NAS_ROOT", "/mnt/test-k8s")) / "home" / user


def timed(run: Callable[[], subprocess.CompletedProcess[Any]]) -> tuple[float, Any]:
    started = time.monotonic()
    done = run()
    return time.monotonic() - started, done


class Lab:
    """sbatch/scontrol as lab users; remembers the jobs it queued and cancels them."""

    def __init__(self, run_as: Callable[..., Any], lab_env: dict[str, str]) -> None:
        self._run_as = run_as
        self._env = lab_env
        self.jobs: list[int] = []

    def sbatch(self, user: str, script: bytes, *args: str) -> subprocess.CompletedProcess[str]:
        """sbatch as ``user`` (root: directly) from their NAS home, script on stdin."""
        argv = ["sbatch", "--parsable", *args]
        cwd = home(self._env, user) if user in ("alice", "bob") else "/tmp"
        if user == "root":
            done = subprocess.run(argv, input=script, cwd=cwd, capture_output=True, timeout=60)
        else:
            done = self._run_as(user, argv, input=script, cwd=cwd, text=False, timeout=60)
        result = subprocess.CompletedProcess(
            done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
        )
        if result.returncode == 0:
            self.jobs.append(int(result.stdout.strip().split(";")[0]))
        return result

    def update(self, user: str, job: int, change: str) -> bool:
        done = self._run_as(user, ["scontrol", "update", f"JobId={job}", change])
        return bool(done.returncode == 0)

    @staticmethod
    def show(job: int) -> str:
        return subprocess.run(
            ["scontrol", "show", "job", str(job)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout

    @staticmethod
    def queued(user: str, name: str) -> str:
        return subprocess.run(
            ["squeue", "-h", "-u", user, "-n", name, "-o", "%i"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.strip()


@pytest.fixture
def lab(slurm_ready: str, run_as: Callable[..., Any], lab_env: dict[str, str]) -> Iterator[Lab]:
    helper = Lab(run_as, lab_env)
    yield helper
    if helper.jobs:
        subprocess.run(["scancel", *map(str, helper.jobs)], capture_output=True, timeout=60)


def field(record: str, key: str) -> str:
    """The value of ``key`` on a line of ``scontrol show job`` that starts with it."""
    for line in record.splitlines():
        if line.strip().startswith(f"{key}="):
            return line.strip()[len(key) + 1 :].split(" ")[0]
    return ""


# ---- 1. a huge script must not stall slurmctld for everyone else --------------------------


def test_bobs_pathological_scripts_do_not_stall_alice(lab: Lab, run_as: Callable[..., Any]) -> None:
    outcomes: dict[str, tuple[float, subprocess.CompletedProcess[str]]] = {}

    def attack() -> None:
        for name, (script, _) in ATTACKS.items():
            outcomes[name] = timed(lambda s=script: lab.sbatch("bob", s, "--hold"))

    attacker = threading.Thread(target=attack)
    attacker.start()
    probes: list[tuple[float, float]] = []
    plain = b"#!/bin/sh\ntrue\n"
    while attacker.is_alive() or len(probes) < 3:
        squeue, listed = timed(lambda: run_as("alice", ["squeue", "-h"], timeout=30))
        submit, queued = timed(lambda: lab.sbatch("alice", plain, "--hold"))
        assert listed.returncode == 0, listed.stderr
        assert queued.returncode == 0, queued.stderr
        probes.append((squeue, submit))
    attacker.join()

    assert len(outcomes) == len(ATTACKS)
    print(  # figures for `pytest -s`, not assertions
        f"bob: {', '.join(f'{n} {t:.2f}s' for n, (t, _) in outcomes.items())}; "
        f"alice: {len(probes)} probes, slowest squeue {max(p[0] for p in probes):.2f}s, "
        f"slowest sbatch {max(p[1] for p in probes):.2f}s"
    )
    slowest = (max(p[0] for p in probes), max(p[1] for p in probes))
    assert slowest[0] < STALL_BOUND_S, f"alice's squeue took {slowest[0]:.1f} s ({probes})"
    assert slowest[1] < STALL_BOUND_S, f"alice's sbatch took {slowest[1]:.1f} s ({probes})"
    for name, (elapsed, done) in outcomes.items():
        told = ATTACKS[name][1]
        assert "timed out" not in done.stderr, (name, elapsed, done.stderr)
        if told is None:
            assert done.returncode == 0, (name, done.stderr)
        else:
            assert done.returncode != 0, name
            assert told in done.stderr, (name, done.stderr[-500:])
            # one line per problem: at most 20, then "... and N more problems"
            assert done.stderr.count("sbatch: error: ") <= 22, name


# ---- 2. a forged wrapper never passes as a plain job; accepted jobs carry the mark ----------

EVIL = b"#!/bin/bash\n#K8S_IMAGE=evil.example.com/miner:latest\n#K8S_SHM=100000\nminer\n"


@pytest.mark.parametrize(
    ("script", "args"),
    [
        (wrap_script(EVIL).encode(), ()),  # the attack, byte for byte
        (wrap_script(EVIL).replace("\n# ", "\n#SBATCH -c 1\n# ", 1).encode(), ()),
        (WRAPPER_HEAD.encode() + b"# slurm-k8s-original-script-base64:\n", ()),
        (b"#!/bin/sh\n# slurm-k8s-original-script-base64:\n# bWluZXIK\n", ()),
        (HEAD.encode() + b"# slurm-k8s-original-script-base64:\necho\n", ()),
        (b"", ("--wrap=exec /opt/slurm-k8s/venv/bin/python -m services.runner",)),
    ],
    ids=["wrapper", "wrapper-with-directive", "head-and-marker", "marker", "k8s-job", "wrap"],
)
def test_a_forged_wrapper_is_refused(lab: Lab, script: bytes, args: tuple[str, ...]) -> None:
    name = f"forged-{uuid.uuid4().hex[:8]}"
    done = lab.sbatch("bob", script, "--hold", f"--job-name={name}", *args)
    assert done.returncode != 0, done.stdout
    assert WRAPPER_TEXT in done.stderr, done.stderr
    assert lab.queued("bob", name) == ""


def test_accepted_jobs_are_marked_where_their_owner_cannot_write(lab: Lab) -> None:
    done = lab.sbatch("alice", HELLO, "--hold")
    assert done.returncode == 0, done.stderr
    job = lab.jobs[-1]
    assert field(lab.show(job), "AdminComment") == ACCEPTED_MARK
    assert not lab.update("alice", job, "AdminComment=mine")
    assert not lab.update("alice", job, "AdminComment=")
    assert field(lab.show(job), "AdminComment") == ACCEPTED_MARK
    plain = lab.sbatch("bob", b"#!/bin/sh\ntrue\n", "--hold")
    assert plain.returncode == 0, plain.stderr
    assert field(lab.show(lab.jobs[-1]), "AdminComment") == ""


# ---- 3. the comment cannot unmark a job; the owner cannot update it out of policy ----------


@pytest.mark.parametrize("comment", ["x", "slurmk8s", "slurmk8s-key=NOTHEX", "slurmk8s-key="])
def test_a_comment_other_than_the_key_is_refused(lab: Lab, comment: str) -> None:
    done = lab.sbatch("bob", HELLO, "--hold", f"--comment={comment}")
    assert done.returncode != 0, done.stdout
    assert COMMENT_TEXT in done.stderr, done.stderr


@pytest.mark.parametrize("key", [False, True], ids=["plain-sbatch", "validator-key"])
@pytest.mark.parametrize(
    "change",
    [
        "NumCPUs=64",
        "MinCPUsNode=64",
        "Gres=gpu:8",
        "TresPerNode=gres:gpu:8",
        "MinMemoryNode=64000",
        "NumNodes=2",
        "Comment=x",
        "StdOut=/tmp/x.out",
    ],
)
def test_the_owner_cannot_update_a_marked_job_out_of_policy(
    lab: Lab, change: str, key: bool
) -> None:
    args = [f"--comment=slurmk8s-key={uuid.uuid4().hex[:24]}"] if key else []
    done = lab.sbatch("alice", HELLO, "--hold", *args)
    assert done.returncode == 0, done.stderr
    job = lab.jobs[-1]
    before = lab.show(job)
    assert not lab.update("alice", job, change)
    assert lab.show(job) == before


@pytest.mark.parametrize(
    "args",
    [
        ("-c", "64"),
        ("--mincpus=64",),
        ("--ntasks-per-node=64",),
        ("--gres=gpu:8",),
        ("--gpus-per-socket=8", "--sockets-per-node=1"),
        ("-N", "2"),
        ("--mem=64G",),
    ],
)
def test_the_command_line_cannot_take_a_job_out_of_policy(lab: Lab, args: tuple[str, ...]) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    done = lab.sbatch("bob", HELLO, "--hold", f"--job-name={name}", *args)
    assert done.returncode != 0, done.stdout
    assert "set outside the script" in done.stderr, done.stderr
    assert lab.queued("bob", name) == ""


# ---- 4. root and system accounts -----------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "args"),
    [("root", ()), ("root", ("--uid=alice",)), ("daemon", ()), ("nobody", ())],
)
def test_root_and_system_accounts_cannot_submit_slurm_k8s_jobs(
    lab: Lab, user: str, args: tuple[str, ...]
) -> None:
    name = f"sys-{uuid.uuid4().hex[:8]}"
    done = lab.sbatch(user, HELLO, "--hold", f"--job-name={name}", *args)
    assert done.returncode != 0, done.stdout
    # Ours, or Slurm's own refusal (an account without an association): never an acceptance.
    assert MIN_UID_TEXT in done.stderr or "association" in done.stderr, done.stderr
    for owner in ("root", "daemon", "nobody", "alice"):
        assert lab.queued(owner, name) == ""


def test_roots_plain_jobs_are_still_slurms_business(lab: Lab) -> None:
    done = lab.sbatch("root", b"#!/bin/sh\ntrue\n", "--hold")
    assert done.returncode == 0, done.stderr


# ---- 5. a byte-order mark ------------------------------------------------------------------


def test_a_bom_is_refused_with_a_clear_reason(lab: Lab) -> None:
    name = f"bom-{uuid.uuid4().hex[:8]}"
    done = lab.sbatch("alice", b"\xef\xbb\xbf" + HELLO, "--hold", f"--job-name={name}")
    assert done.returncode != 0, done.stdout
    # sbatch checks the first two bytes itself, before the plugin; ours names the BOM.
    assert "byte-order mark" in done.stderr or "does not look like a batch script" in done.stderr
    assert lab.queued("alice", name) == ""
