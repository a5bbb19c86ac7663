"""How long an ordinary NAS drop waits when someone else's huge file sits in submit/ (issue 7).

    source <(make -s lab-env)
    python bench/nas_huge_file.py [--rounds 5] [--size 8G | --size just-under]   # as root

Starts this checkout's watcher and validator on a throwaway RabbitMQ vhost and a private NAS
tree (``<NAS>/.bench-nas-<id>``, ``home/<user>`` linking to the real homes), against the lab's
real Slurm. Each round measures alice's hello.sh from the drop (``cat`` as alice) to its receipt
in ``submitted/``, twice: alone, and dropped right after bob's sparse file of ``--size``
(``truncate -s``). ``--size just-under`` drops instead a real file just under the limit made of
``#SBATCH --outp=/x`` lines (≈58,000 problems): the most a file that is read can cost. Prints
every figure and the medians. The jobs are held and cancelled.

Before issue 7's fix the watcher and the validator read and hashed the whole huge file first
(8 GB: 57 s on the lab); now both look at its size with ``lstat`` and never read it.

Timings are figures to read, never test assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import suppress
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
HELLO = (
    "#!/bin/bash\n"
    "#SBATCH --job-name={name}\n"
    "#SBATCH --hold\n"
    "#SBATCH --cpus-per-task=1\n"
    "#SBATCH --mem=1G\n"
    "#SBATCH --output=/mnt/test-k8s/results/%j.out\n"
    "#K8S_IMAGE=nas-hub.local:5407/alpine:latest\n"
    "\n"
    'echo "Hello from Slurm-K8s!"\n'
)
TIMEOUT_S = 600.0
LIMIT = 1_048_576  # slurm/policy.conf max_script_bytes


def run_as(user: str, *argv: str, stdin: str | None = None) -> None:
    subprocess.run(
        ["runuser", "-u", user, "--", *argv],
        input=stdin,
        text=True,
        check=True,
        cwd="/tmp",
        capture_output=True,
        timeout=60,
    )


def wait_until(path: Path, also: Path) -> str:
    """Poll (every 20 ms) until ``path`` (receipt) or ``also`` (error file) exists."""
    end = time.monotonic() + TIMEOUT_S
    while time.monotonic() < end:
        if path.exists():
            return "submitted"
        if also.exists():
            return "failed"
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {path.name}")


def start(name: str, env: dict[str, str], logs: Path, ready: str) -> subprocess.Popen[bytes]:
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    end = time.monotonic() + 60
    while ready not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > end:
            raise SystemExit(f"{name} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    return proc


def make_tree(nas: Path) -> Path:
    """A private NAS tree whose home/<user> are the real homes; returns its root."""
    root = nas / f".bench-nas-{uuid.uuid4().hex[:8]}"
    jobs = root / "slurm-jobs"
    for d in ("submit", "submitted", "failed"):
        (jobs / d).mkdir(parents=True)
    (jobs / "submit").chmod(0o1777)
    (root / "home").mkdir()
    for user in ("alice", "bob"):
        (root / "home" / user).symlink_to(nas / "home" / user)
    (root / "logs").mkdir()
    return root


def make_vhost(url: str) -> tuple[str, str]:
    """A throwaway vhost the service user may use: (its name, the AMQP URL on it)."""
    parts = urlsplit(url)
    vhost = f"bench-{uuid.uuid4().hex[:8]}"
    user = parts.username or ""
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    return vhost, urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


def one_drop(jobs: Path, tag: str, big: str | None) -> tuple[float, str]:
    """bob's sparse file first (when ``big``), then alice's hello.sh: (seconds, job id)."""
    submit = jobs / "submit"
    if big == "just-under":
        text = "#!/bin/bash\n#K8S_IMAGE=nas-hub.local:5407/alpine:latest\n"
        line = "#SBATCH --outp=/x\n"
        text += line * ((LIMIT - 64 - len(text)) // len(line))
        run_as("bob", "sh", "-c", 'cat > "$0"', str(submit / f"{tag}-big.sh"), stdin=text)
    elif big:
        run_as("bob", "truncate", "-s", big, str(submit / f"{tag}-big.sh"))
    name = f"{tag}-hello.sh"
    dropped = time.monotonic()
    run_as("alice", "sh", "-c", 'cat > "$0"', str(submit / name), stdin=HELLO.format(name=name))
    receipt = jobs / "submitted" / f"{name}.receipt.json"
    error = jobs / "failed" / f"{name}.error"
    outcome = wait_until(receipt, error)
    took = time.monotonic() - dropped
    if outcome != "submitted":
        raise SystemExit(f"{name} was refused: {error.read_text()}")
    return took, str(json.loads(receipt.read_text())["job_id"])


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", default="8G", help="size of bob's sparse file (truncate -s)")
    args = parser.parse_args()
    if os.geteuid() != 0 or not os.environ.get("AMQP_URL"):
        raise SystemExit("run as root after `source <(make -s lab-env)`")

    root = make_tree(Path(os.environ.get("NAS_ROOT", "/mnt/test-k8s")))
    vhost, url = make_vhost(os.environ["AMQP_URL"])
    env = {**os.environ, "AMQP_URL": url, "NAS_ROOT": str(root), "LOG_FORMAT": "json"}
    procs: list[subprocess.Popen[bytes]] = []
    job_ids: list[str] = []
    figures: dict[str, list[float]] = {"alone": [], f"after bob's {args.size} file": []}
    try:
        procs.append(start("watcher", env, root / "logs", "watcher.configured"))
        procs.append(start("validator", env, root / "logs", '"consuming"'))
        for n in range(args.rounds):
            for label, big in zip(figures, (None, args.size), strict=True):
                took, job_id = one_drop(root / "slurm-jobs", f"{n}-{uuid.uuid4().hex[:4]}", big)
                job_ids.append(job_id)
                figures[label].append(took)
                print(f"round {n}: {label:<24} drop -> receipt {took:6.2f} s", flush=True)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=120)
            if proc.poll() is None:
                proc.kill()
        if job_ids:
            subprocess.run(["scancel", *job_ids], check=False, timeout=60)
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False)
        shutil.rmtree(root, ignore_errors=True)
    print()
    for label, values in figures.items():
        if values:
            print(
                f"median {label:<24} {statistics.median(values):6.2f} s "
                f"(min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
