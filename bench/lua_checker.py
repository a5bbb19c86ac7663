"""How long job_submit.lua takes on pathological scripts, run standalone (no slurmctld).

    python bench/lua_checker.py [--lua lua5.1] [--timeout 60] [--only NAME]

slurmctld runs job_submit.lua while it holds its job write lock, so every second the checker
spends is a second no other user can run squeue or sbatch (issue 7, "stalling the controller").
Each case is written to a file and submitted through tests/unit/slurm/driver.lua in "submit"
mode, which calls slurm_job_submit exactly as slurmctld would (policy read from
slurm/policy.conf, submit uid 2001, bash -n included). The figure is the wall time of the
whole Lua process, interpreter start-up included (~2 ms). Prints one line per case:
name, size, time, and the first line of what the user would be told.

Timings are figures to read, never test assertions.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tests" / "unit" / "slurm" / "driver.lua"
JOB_SUBMIT = REPO / "slurm" / "job_submit.lua"
POLICY = REPO / "slurm" / "policy.conf"
HOME = "/mnt/test-k8s/home/alice"
LIMIT = 1_048_576  # slurm/policy.conf max_script_bytes
SLURM_MAX = 4 * 1024 * 1024  # sbatch's own default limit
HEAD = "#!/bin/bash\n#K8S_IMAGE=nas-hub.local:5407/alpine:latest\n"


def repeat_to(size: int, head: str, unit: str, tail: str = "echo hi\n") -> bytes:
    """``head`` + as many ``unit`` as fit + ``tail``, at most ``size`` bytes."""
    room = size - len(head) - len(tail)
    return (head + unit * (room // len(unit)) + tail).encode()


def one_line(size: int, head: str, start: str, word: str) -> bytes:
    room = size - len(head) - len(start) - len("\necho hi\n")
    return (head + start + word * (room // len(word)) + "\necho hi\n").encode()


CASES: dict[str, Callable[[], bytes]] = {
    # The attack: ~55,000 ambiguous-prefix directives, each a problem.
    "outp-just-under-1MB": lambda: repeat_to(LIMIT - 64, HEAD, "#SBATCH --outp=/x\n"),
    "outp-at-1MB": lambda: repeat_to(LIMIT, HEAD, "#SBATCH --outp=/x\n"),
    "outp-just-over-1MB": lambda: repeat_to(LIMIT + 18, HEAD, "#SBATCH --outp=/x\n"),
    "outp-4MB": lambda: repeat_to(SLURM_MAX, HEAD, "#SBATCH --outp=/x\n"),
    "job-name-just-under-1MB": lambda: repeat_to(LIMIT - 64, HEAD, "#SBATCH -J x\n"),
    "output-outside-just-under-1MB": lambda: repeat_to(LIMIT - 64, HEAD, "#SBATCH -o /etc/x\n"),
    "unknown-short-one-line-1MB": lambda: one_line(LIMIT - 64, HEAD, "#SBATCH", " -Z"),
    "flags-one-line-1MB": lambda: one_line(LIMIT - 64, HEAD, "#SBATCH", " -H"),
    "quoted-one-line-1MB": lambda: (
        one_line(LIMIT - 64, HEAD, "#SBATCH -o '/x", " y")[:-9] + b"'\necho hi\n"
    ),
    "long-path-one-line-1MB": lambda: one_line(LIMIT - 64, HEAD, "#SBATCH -o /x/", "y"),
    "trim-one-k8s-line-1MB": lambda: (
        one_line(LIMIT - 64, HEAD, "#K8S_SHM=1", " ")[:-9] + b"x\necho hi\n"
    ),
    "k8s-unknown-just-under-1MB": lambda: repeat_to(LIMIT - 64, HEAD, "#K8S_FOO=1\n"),
    "k8s-late-just-under-1MB": lambda: repeat_to(LIMIT - 64, HEAD + "echo\n", "#K8S_X=1\n"),
    "k8s-image-twice-just-under-1MB": lambda: repeat_to(
        LIMIT - 64, HEAD, "#K8S_IMAGE=nas-hub.local:5407/alpine:latest\n"
    ),
    "blank-lines-just-under-1MB": lambda: repeat_to(LIMIT - 64, HEAD, "\n"),
    "plain-job-4MB": lambda: repeat_to(SLURM_MAX, "#!/bin/bash\n", "#SBATCH --outp=/x\n"),
}


def run(lua: str, script: bytes, timeout: float) -> tuple[float | None, str]:
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job.sh"
        job.write_bytes(script)
        env = {k: v for k, v in os.environ.items() if k != "SLURMK8S_POLICY"}
        command = [lua, str(DRIVER), str(JOB_SUBMIT), "submit", str(POLICY), "alice", HOME]
        started = time.perf_counter()
        try:
            done = subprocess.run(
                [*command, str(job), "cpus_per_task=1", "num_tasks=1"],
                capture_output=True,
                timeout=timeout,
                env=env,
                check=True,
            )
        except subprocess.TimeoutExpired:
            return None, ""
        elapsed = time.perf_counter() - started
    head = done.stdout.decode(errors="replace").partition("script:\n")[0]
    lines = head.split("\n")
    rc = lines[0]
    messages = [m for m in lines[3:] if m]  # after rc=, comment=, admin_comment=
    first = messages[0] if messages and rc != "rc=0" else "(accepted)" if rc == "rc=0" else ""
    more = f" (+{len(messages) - 1} lines)" if len(messages) > 1 and rc != "rc=0" else ""
    return elapsed, (first[:90] + more)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lua", default=shutil.which("lua5.1") or "lua5.3")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    print(f"{args.lua}, {JOB_SUBMIT.relative_to(REPO)}, limit {LIMIT} bytes")
    for name, make in CASES.items():
        if args.only and args.only not in name:
            continue
        script = make()
        elapsed, said = run(args.lua, script, args.timeout)
        shown = f">{args.timeout:.0f} s" if elapsed is None else f"{elapsed * 1000:8.0f} ms"
        print(f"{name:34} {len(script):>8} B {shown:>10}  {said}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
