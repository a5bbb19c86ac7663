"""The submit-time checks: every problem of a job script at once, each with its line number.

One function, ``check_script``, used by the NAS validator and ``slurmk8s validate``;
``slurm/job_submit.lua`` applies the same rules to plain ``sbatch`` from the same policy file.
Messages are plain sentences for the job's owner (line 0 means the whole file).

Options refused in a job file, and why (the documented list):

* ``--uid``, ``--gid``: change who the job runs as.
* ``--container``: Slurm's own OCI runtime would run the job outside Kubernetes.
* ``--get-user-env``: loads a login environment chosen outside the job file.
* ``--export`` other than ``ALL`` or ``NONE``, ``--export-file``: variables injected into the
  batch step could change how slurm-k8s's runner behaves (``PYTHONPATH``, ``LD_PRELOAD``…).
* ``--wrap``: replaces the script with a command line; meaningless in a file.
* ``--bb``, ``--bbf``, ``--network``, ``--x11``: reach outside the job's Pod.
* ``--clusters``, ``--cluster-constraint``: would send the job to another cluster's policy.
* ``--comment``: slurm-k8s records its submission key there.
* ``--test-only``, ``--wait``, ``--help``, ``--usage``, ``--version``: sbatch would not submit,
  or would block until the job ends.
* ``--gpus-per-socket``: cannot be checked against the GPU limit (use ``--gpus``).
* ``hetjob``/``packjob`` separators and more than ``max_nodes`` nodes.

Allowed on purpose: ``--exclusive``, ``--reservation``, ``--begin``, ``--dependency``,
``--partition``, ``--qos``, ``--account`` (Slurm enforces who may use them), ``--propagate``.

Paths (``--output``, ``--error``, ``--input``, ``--chdir``) must resolve under a writable root
after ``%u`` is replaced by the user and ``..``/``//`` are collapsed. A relative path resolves
against ``--chdir`` when given, else against the user's NAS home (``<NAS>/home/<user>``), which is
also the directory the validator runs sbatch in. ``/dev/null`` is always allowed. Symlinks are
not followed: Slurm opens these files as the job's owner, so the roots are policy (where output
belongs), while file permissions remain the security boundary.

``#K8S_WORKDIR`` and ``#K8S_SCRIPT`` (paths: absolute, no ``..``; the script a regular file
under ``script_roots`` its owner can read, decided from mode bits) are checked by
``k8s_paths``; unknown ``#K8S_`` names are refused with the list of known ones.

Bounded work (the Lua twin runs inside slurmctld, where a slow check stalls every user): a
file over ``max_script_bytes`` gets one problem (its size and the limit) and is not parsed; a
file starting with a UTF-8 byte-order mark gets one problem too. At most ``MAX_PROBLEMS``
problems are listed, those with the lowest line numbers, and one last line says how many more
were found (``... and N more problems (only the first 20 are listed)``); every pass is linear in
the file's size.
"""

from __future__ import annotations

import posixpath
import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from shared.jobscript import resources
from shared.jobscript.images import ImageError, parse_image
from shared.jobscript.k8s_paths import (
    UNKNOWN,
    Account,
    Seen,
    host_account,
    host_stat,
    safe_path,
    script_problem,
)
from shared.jobscript.parsing import C_SPACE, Option, ParsedScript, parse_script
from shared.jobscript.policy import Policy
from shared.jobscript.wrapping import wrapper_sign
from shared.messages import Problem

REFUSED_OPTIONS: dict[str, str] = {
    "uid": "it changes who the job runs as",
    "gid": "it changes who the job runs as",
    "container": "it runs the job in Slurm's own container runtime, outside Kubernetes",
    "get-user-env": "it loads a login environment chosen outside the job file",
    "export-file": "it injects environment variables into the job",
    "wrap": "it replaces the script with a command line",
    "bb": "burst buffer requests run outside the job",
    "bbf": "burst buffer requests run outside the job",
    "network": "network fabric requests reach outside the job's Pod",
    "x11": "X11 forwarding reaches outside the job's Pod",
    "clusters": "it sends the job to another cluster, outside this policy",
    "cluster-constraint": "it sends the job to another cluster, outside this policy",
    "comment": "slurm-k8s records its submission key in the job comment",
    "test-only": "the job would not be submitted",
    "wait": "sbatch would block until the job ends",
    "help": "sbatch would print help instead of submitting",
    "usage": "sbatch would print help instead of submitting",
    "version": "sbatch would print its version instead of submitting",
    "gpus-per-socket": "GPUs per socket cannot be checked against the GPU limit; use --gpus",
}
PATH_OPTIONS = ("chdir", "output", "error", "input")
K8S_DIRECTIVES = ("IMAGE", "SHM", "WORKDIR", "SCRIPT")
ALWAYS_WRITABLE = ("/dev/null",)
SHELLS = ("sh", "bash", "dash")
SYNTAX_TIMEOUT_S = 10.0
#: Problems listed at most; the rest are counted on one last line.
MAX_PROBLEMS = 20
BOM = b"\xef\xbb\xbf"

SyntaxChecker = Callable[[bytes], list[Problem]]
"""Checks a shell script's syntax; returns problems (tests substitute a fake)."""


@dataclass(frozen=True)
class Files:
    """How ``#K8S_SCRIPT`` is looked up: the owner's account and ``stat`` (tests fake them)."""

    account: Callable[[str], Account] = host_account
    stat: Callable[[str, bool], Seen] = host_stat


HOST_FILES = Files()


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one script."""

    problems: tuple[Problem, ...]
    parsed: ParsedScript | None

    @property
    def accepted(self) -> bool:
        """True when there is nothing to report."""
        return not self.problems


def bash_syntax(data: bytes) -> list[Problem]:
    """Run ``bash -n`` on the script (it parses, never executes) and report its errors."""
    try:
        done = subprocess.run(
            ["bash", "-n"],
            input=data,
            capture_output=True,
            timeout=SYNTAX_TIMEOUT_S,
            # A non-interactive bash sources $BASH_ENV; give it nothing to source.
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        return [Problem(line=0, message="the shell syntax check (bash -n) took too long")]
    except OSError:
        return []  # no bash here: sbatch's host will still run it; not the user's fault
    problems = []
    for text in done.stderr.decode(errors="replace").splitlines():
        match = re.search(r"line (\d+): (.*)", text)
        if match:
            problems.append(Problem(line=int(match[1]), message=f"shell syntax: {match[2]}"))
        elif text.strip():
            problems.append(Problem(line=0, message=f"shell syntax: {text.strip()}"))
    if done.returncode != 0 and not problems:
        problems.append(Problem(line=0, message="the shell syntax check (bash -n) failed"))
    return problems


def check_script(
    data: bytes,
    policy: Policy,
    *,
    user: str,
    home: str,
    syntax: SyntaxChecker | None = bash_syntax,
    files: Files | None = HOST_FILES,
) -> Verdict:
    """Check a job script against the policy.

    Args:
        data: the exact bytes that would be given to sbatch.
        policy: limits and allowed places.
        user: the owner's name (``%u`` in writable roots and paths).
        home: the directory relative paths resolve against (the user's NAS home).
        syntax: the shell syntax checker; None skips it.
        files: where ``#K8S_SCRIPT`` is looked up; None checks only its form.

    Returns:
        All problems, ordered by line.
    """
    if len(data) > policy.max_script_bytes:
        # Refused before a byte is parsed: the size alone decides, whatever the content.
        return Verdict(problems=(_too_big(len(data), policy),), parsed=None)
    if data.startswith(BOM):
        # Everything after it would be misread (no #! on line 1, every directive ignored).
        return Verdict(problems=(Problem(line=1, message=BOM_TEXT),), parsed=None)
    problems = ProblemList(MAX_PROBLEMS)
    problems.extend(_check_bytes(data))
    if (sign := wrapper_sign(data)) is not None:
        problems.add(Problem(line=sign[0], message=wrapper_text(sign[1])))
    text = data.decode("utf-8", errors="surrogateescape")
    parsed = parse_script(text)
    if parsed.shebang is None or not parsed.shebang[2:].strip(C_SPACE):
        # "#!" alone names nothing to run: the kernel refuses to exec it (ENOEXEC).
        problems.add(
            Problem(
                line=1,
                message="the first line must name an interpreter, e.g. #!/bin/bash",
            )
        )
    problems.extend(parsed.problems)
    problems.extend(_check_options(parsed, policy, user=user, home=home))
    problems.extend(_check_k8s(parsed, policy, user=user, files=files))
    # bash -n on a NUL-carrying file only repeats the NUL problem in worse words.
    shell = _is_shell(parsed.shebang) and b"\0" not in data
    if syntax is not None and policy.bash_syntax_check and shell:
        problems.extend(syntax(data))
    return Verdict(problems=problems.result(), parsed=parsed)


BOM_TEXT = "starts with a byte-order mark (BOM); save the file as UTF-8 without BOM"


def wrapper_text(sign: str) -> str:
    """The problem of a script that carries the wrapper's own text."""
    return (
        f"contains '{sign}', which only slurm-k8s's own wrapper may carry; submit your "
        "original script (slurm-k8s wraps it itself)"
    )


def more_text(more: int, limit: int = MAX_PROBLEMS) -> str:
    """The last line when problems were left out."""
    return f"... and {more} more problems (only the first {limit} are listed)"


class ProblemList:
    """The ``limit`` problems with the lowest line numbers, distinct, and a count of the rest.

    Adding is O(1) unless the problem displaces a listed one (O(limit)); memory is O(limit).
    A problem equal to a listed one is dropped; any other problem that is not (or no longer)
    listed counts towards "N more". Ties on a line keep the order problems were added in.
    ``job_submit.lua`` has the same structure, fed in the same order, so both list the same
    problems and the same count.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._kept: list[tuple[int, int, Problem]] = []  # (line, order added, problem)
        self._listed: set[Problem] = set()
        self._worst = -1  # index in _kept of the entry with the highest (line, order)
        self._added = 0
        self.more = 0

    def add(self, problem: Problem) -> None:
        """Offer one problem."""
        if problem in self._listed:
            return
        self._added += 1
        entry = (problem.line, self._added, problem)
        if len(self._kept) < self._limit:
            self._kept.append(entry)
            self._listed.add(problem)
            if self._worst < 0 or entry[:2] > self._kept[self._worst][:2]:
                self._worst = len(self._kept) - 1
            return
        self.more += 1
        if problem.line >= self._kept[self._worst][0]:
            return  # a later line (or a later one on the same line): not listed
        self._listed.discard(self._kept[self._worst][2])
        self._kept[self._worst] = entry
        self._listed.add(problem)
        self._worst = max(range(len(self._kept)), key=lambda i: self._kept[i][:2])

    def extend(self, problems: Iterable[Problem]) -> None:
        """Offer several problems, in order."""
        for problem in problems:
            self.add(problem)

    def result(self) -> tuple[Problem, ...]:
        """The listed problems by line, then one ``... and N more`` line if any were left out."""
        listed = tuple(p for _, _, p in sorted(self._kept, key=lambda e: e[:2]))
        if self.more:
            return (*listed, Problem(line=0, message=more_text(self.more, self._limit)))
        return listed


def uses_k8s(data: bytes) -> bool:
    """Whether any line starts with ``#K8S_``: the script means to be a slurm-k8s job.

    Scripts without one are plain Slurm jobs, which ``job_submit.lua`` lets through untouched.
    A misplaced ``#K8S_`` line (after the first command) still counts, so it is reported
    instead of the job silently running outside Kubernetes.
    """
    return any(line.startswith(b"#K8S_") for line in data.split(b"\n"))


def format_problem(problem: Problem) -> str:
    """``line 4: message`` (``file: message`` for line 0)."""
    where = f"line {problem.line}" if problem.line else "file"
    return f"{where}: {problem.message}"


def _is_shell(shebang: str | None) -> bool:
    if shebang is None:
        return False
    words = shebang[2:].split()
    if not words:
        return False
    program = posixpath.basename(words[0])
    if program == "env" and len(words) > 1:
        program = posixpath.basename(words[1])
    return program in SHELLS


def _too_big(size: int, policy: Policy) -> Problem:
    return Problem(
        line=0, message=f"the file is {size} bytes; the limit is {policy.max_script_bytes} bytes"
    )


def _check_bytes(data: bytes) -> list[Problem]:
    problems = []
    if b"\0" in data:
        line = data[: data.index(b"\0")].count(b"\n") + 1
        problems.append(Problem(line=line, message="contains a NUL byte (is it a binary file?)"))
    if b"\r\n" in data:
        line = data[: data.index(b"\r\n")].count(b"\n") + 1
        problems.append(
            Problem(
                line=line,
                message="has Windows line endings (CRLF); save it with Unix (LF) line endings",
            )
        )
    return problems


def _check_options(parsed: ParsedScript, policy: Policy, *, user: str, home: str) -> list[Problem]:
    problems: list[Problem] = []
    for option in parsed.options:
        reason = REFUSED_OPTIONS.get(option.name)
        if reason is not None:
            problems.append(
                Problem(line=option.line, message=f"--{option.name} is not allowed: {reason}")
            )
        elif option.name == "export" and (option.value or "") not in ("ALL", "NONE"):
            problems.append(
                Problem(
                    line=option.line,
                    message=f"--export={option.value} is not allowed: only --export=ALL or "
                    "--export=NONE (variables could change how slurm-k8s runs the job)",
                )
            )
        elif option.name == "job-name" and "/" in (option.value or ""):
            problems.append(
                Problem(
                    line=option.line,
                    message="--job-name must not contain '/' (it can become part of file "
                    "names through %x)",
                )
            )
    problems.extend(_check_resources(parsed, policy))
    problems.extend(_check_paths(parsed, policy, user=user, home=home))
    return problems


def _read_all(
    parsed: ParsedScript, readers: dict[str, Callable[[str], object]]
) -> tuple[dict[str, tuple[object, Option]], list[Problem]]:
    """Read every occurrence (sbatch refuses a bad value anywhere); keep the last good one."""
    values: dict[str, tuple[object, Option]] = {}
    problems = []
    for option in parsed.options:
        reader = readers.get(option.name)
        if reader is None or option.value is None:
            continue
        try:
            values[option.name] = (reader(option.value), option)
        except ValueError as exc:
            problems.append(Problem(line=option.line, message=f"--{option.name}: {exc}"))
    return values, problems


_READERS: dict[str, Callable[[str], object]] = {
    "cpus-per-task": resources.count,
    "ntasks": resources.count,
    "ntasks-per-node": resources.count,
    "mincpus": resources.count,
    "cpus-per-gpu": resources.count,
    "mem": resources.size_mb,
    "mem-per-cpu": resources.size_mb,
    "mem-per-gpu": resources.size_mb,
    "gres": resources.gres_gpus,
    "gpus": resources.gpu_spec,
    "gpus-per-node": resources.gpu_spec,
    "gpus-per-task": resources.gpu_spec,
    "nodes": resources.node_range,
    "array": resources.array_tasks,
}


class _Values:
    """The last good value of each resource option, with its line."""

    def __init__(self, values: dict[str, tuple[object, Option]]) -> None:
        self._values = values

    def get(self, name: str) -> tuple[int, int] | None:
        """(value, line) of an integer option, or None when not given."""
        if name not in self._values:
            return None
        value, option = self._values[name]
        assert isinstance(value, int)  # the readers in _READERS return int for these
        return value, option.line

    def option(self, name: str) -> tuple[object, Option] | None:
        """The raw (value, option) pair."""
        return self._values.get(name)


def _check_resources(parsed: ParsedScript, policy: Policy) -> list[Problem]:
    raw, problems = _read_all(parsed, _READERS)
    values = _Values(raw)
    tasks = values.get("ntasks") or values.get("ntasks-per-node") or (1, 0)
    gpus, gpu_line = _gpus(values, tasks[0])
    if gpus > policy.max_gpus:
        problems.append(
            Problem(line=gpu_line, message=f"asks for {gpus} GPUs; the limit is {policy.max_gpus}")
        )
    cpus, cpu_line = _cpus(values, tasks, gpus)
    if cpus > policy.max_cpus:
        problems.append(
            Problem(line=cpu_line, message=f"asks for {cpus} CPUs; the limit is {policy.max_cpus}")
        )
    problems.extend(_check_memory(values, policy, cpus=cpus, gpus=gpus))
    nodes = values.option("nodes")
    if nodes is not None:
        span, option = nodes
        assert isinstance(span, tuple)  # resources.node_range returns (min, max)
        if span[1] > policy.max_nodes:
            problems.append(
                Problem(
                    line=option.line,
                    message=f"--nodes={option.value}: multi-node jobs are not supported yet",
                )
            )
    array = values.get("array")
    if array is not None and array[0] > policy.max_array_tasks:
        problems.append(
            Problem(
                line=array[1],
                message=f"the job array has {array[0]} tasks; the limit is "
                f"{policy.max_array_tasks}",
            )
        )
    return problems


def _gpus(values: _Values, tasks: int) -> tuple[int, int]:
    """GPUs asked for, (count, line): the largest of the ways to ask."""
    found = [(0, 0)]
    for name in ("gres", "gpus", "gpus-per-node"):
        if (value := values.get(name)) is not None:
            found.append(value)
    if (per_task := values.get("gpus-per-task")) is not None:
        found.append((per_task[0] * tasks, per_task[1]))
    return max(found)


def _cpus(values: _Values, tasks: tuple[int, int], gpus: int) -> tuple[int, int]:
    """CPUs asked for, (count, line): tasks x cpus-per-task, or more via cpus-per-gpu/mincpus."""
    per_task = values.get("cpus-per-task") or (1, 0)
    cpus, line = tasks[0] * per_task[0], max(tasks[1], per_task[1])
    for name, factor in (("cpus-per-gpu", gpus), ("mincpus", 1)):
        if (found := values.get(name)) is not None and found[0] * factor > cpus:
            cpus, line = found[0] * factor, found[1]
    return cpus, line


def _check_memory(values: _Values, policy: Policy, *, cpus: int, gpus: int) -> list[Problem]:
    problems = []
    for name, factor in (("mem", 1), ("mem-per-cpu", cpus), ("mem-per-gpu", gpus)):
        if (found := values.get(name)) is None:
            continue
        mb, line = found[0] * factor, found[1]
        if name == "mem" and mb == 0:
            problems.append(
                Problem(
                    line=line,
                    message="--mem=0 asks for all of a node's memory; "
                    f"the limit is {policy.max_mem_mb} MB",
                )
            )
        elif mb > policy.max_mem_mb:
            problems.append(
                Problem(
                    line=line,
                    message=f"asks for {mb} MB of memory; the limit is {policy.max_mem_mb} MB",
                )
            )
    return problems


def canonical(path: str, base: str) -> str:
    """An absolute path with ``.``, ``..`` and repeated slashes collapsed (no symlinks)."""
    joined = posixpath.join(base, path)
    normal = posixpath.normpath(joined)
    # POSIX keeps a leading "//" as implementation-defined; Linux treats it as "/".
    return "/" + normal.lstrip("/")


def is_under(path: str, roots: tuple[str, ...]) -> bool:
    """Whether a canonical path is one of the roots or inside one."""
    return _under(path, _tops(roots))


def _tops(roots: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Each root as ``is_under`` compares it: canonical, and with one trailing slash."""
    return tuple((top, top.rstrip("/") + "/") for top in (canonical(r, "/") for r in roots))


def _under(path: str, tops: tuple[tuple[str, str], ...]) -> bool:
    return any(path == top or path.startswith(inside) for top, inside in tops)


def _check_paths(parsed: ParsedScript, policy: Policy, *, user: str, home: str) -> list[Problem]:
    problems = []
    roots = policy.roots_for(user)
    tops = _tops(roots)
    shown = ", ".join(roots)
    base = home
    chdir = parsed.last("chdir")
    if chdir is not None and chdir.value is not None:
        base = canonical(chdir.value.replace("%u", user), home)
    for name in PATH_OPTIONS:
        for option in (o for o in parsed.options if o.name == name):
            value = (option.value or "").replace("%u", user)
            where = canonical(value, home if name == "chdir" else base)
            if where in ALWAYS_WRITABLE or _under(where, tops):
                continue
            problems.append(
                Problem(
                    line=option.line,
                    message=f"--{name} '{option.value}' is outside the folders you may "
                    f"use ({shown})",
                )
            )
    return problems


def _check_k8s(
    parsed: ParsedScript, policy: Policy, *, user: str, files: Files | None
) -> list[Problem]:
    problems = []
    seen: dict[str, int] = {}
    for directive in parsed.k8s:
        if directive.name not in K8S_DIRECTIVES:
            known = ", ".join(f"#K8S_{n}" for n in K8S_DIRECTIVES)
            problems.append(
                Problem(
                    line=directive.line,
                    message=f"unknown directive #K8S_{directive.name} (known: {known})",
                )
            )
        elif directive.name in seen:
            problems.append(
                Problem(
                    line=directive.line,
                    message=f"#K8S_{directive.name} is given twice "
                    f"(first on line {seen[directive.name]})",
                )
            )
        else:
            seen[directive.name] = directive.line
    for line in parsed.late_k8s_lines:
        problems.append(
            Problem(
                line=line,
                message=f"this #K8S_ line comes after the first command (line "
                f"{parsed.first_command_line}) and is not read; move it above that line",
            )
        )
    problems.extend(_check_image(parsed, policy))
    problems.extend(_check_shm(parsed, policy))
    problems.extend(_check_paths_k8s(parsed, policy, user=user, files=files))
    return problems


def _check_paths_k8s(
    parsed: ParsedScript, policy: Policy, *, user: str, files: Files | None
) -> list[Problem]:
    """``#K8S_WORKDIR`` (form only) and ``#K8S_SCRIPT`` (form, root, owner can read it)."""
    problems = []
    workdir = parsed.k8s_value("WORKDIR")
    if workdir is not None and not safe_path(workdir.value):
        problems.append(
            Problem(
                line=workdir.line,
                message=f"#K8S_WORKDIR '{workdir.value}' must be an absolute path without '..' "
                "or control characters",
            )
        )
    script = parsed.k8s_value("SCRIPT")
    if script is not None:
        if files is None:
            why = script_problem(
                script.value, policy.script_roots, user, Account(-1, frozenset()), _no_stat
            )
        else:
            why = script_problem(
                script.value, policy.script_roots, user, files.account(user), files.stat
            )
        if why is not None:
            problems.append(Problem(line=script.line, message=why))
    return problems


def _no_stat(path: str, follow: bool) -> Seen:
    """Without a filesystem: nothing can be decided past the form (``UNKNOWN``)."""
    return UNKNOWN


def _check_image(parsed: ParsedScript, policy: Policy) -> list[Problem]:
    problems = []
    image = parsed.k8s_value("IMAGE")
    if image is None:
        problems.append(
            Problem(
                line=0,
                message="no #K8S_IMAGE= line: name the container image that runs the job, "
                "e.g. #K8S_IMAGE=nas-hub.local:5407/alpine:latest",
            )
        )
    else:
        try:
            ref = parse_image(image.value)
        except ImageError as exc:
            problems.append(Problem(line=image.line, message=f"#K8S_IMAGE: {exc}"))
        else:
            if ref.registry not in policy.allowed_registries:
                allowed = " ".join(policy.allowed_registries)
                problems.append(
                    Problem(
                        line=image.line,
                        message=f"#K8S_IMAGE registry '{ref.registry}' is not allowed "
                        f"(allowed: {allowed})",
                    )
                )
    return problems


def _check_shm(parsed: ParsedScript, policy: Policy) -> list[Problem]:
    problems = []
    shm = parsed.k8s_value("SHM")
    if shm is not None:
        try:
            mb = resources.size_mb(shm.value)
        except ValueError as exc:
            problems.append(Problem(line=shm.line, message=f"#K8S_SHM: {exc}"))
        else:
            if mb > policy.max_shm_mb:
                problems.append(
                    Problem(
                        line=shm.line,
                        message=f"#K8S_SHM asks for {mb} MB; the limit is {policy.max_shm_mb} MB",
                    )
                )
    return problems
