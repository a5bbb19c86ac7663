"""``slurmk8s``: the command line for people. One function per subcommand.

``validate FILE`` runs the same checks as the NAS validator, locally and quickly, and prints the
same messages. Other subcommands (``explain JOBID``) are added beside it.

Exit codes: 0 accepted, 1 rejected, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from pathlib import Path

from shared.checks import add_check_parser
from shared.config import NasSettings
from shared.errors import ConfigError
from shared.jobscript import check_script, format_problem, load_policy, policy_path
from shared.status import add_status_parsers

EXIT_OK, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2


def validate(args: argparse.Namespace) -> int:
    """Check a job file as the NAS validator would; print its verdict."""
    path: Path = args.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"slurmk8s: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    try:
        policy = load_policy(policy_path(fallback_to_repo=True))
    except ConfigError as exc:
        print(f"slurmk8s: {exc}", file=sys.stderr)
        return EXIT_USAGE
    user: str = args.user or getpass.getuser()
    home = str(NasSettings().nas_root / "home" / user)
    verdict = check_script(data, policy, user=user, home=home)
    if verdict.accepted:
        print(f"{path}: ok")
        return EXIT_OK
    print(f"{path}: rejected, {len(verdict.problems)} problem(s):")
    for problem in verdict.problems:
        print(format_problem(problem))
    return EXIT_REJECTED


def explain(args: argparse.Namespace) -> int:
    """Print Slurm's and the Pod's view of a job with a one-line diagnosis (``why``).

    A name instead of a job id is a file dropped on the NAS: its refusal is printed.
    """
    if not args.jobid.isdigit():
        return _refused(args.jobid)
    args.jobid = int(args.jobid)
    if args.json:
        import json

        from shared.why import why_document  # deferred: validate stays light

        print(json.dumps(why_document(args.jobid), indent=2, default=str))
        return EXIT_OK
    from shared.explaining import explain_job  # deferred: validate stays light

    print(explain_job(args.jobid), end="")
    return EXIT_OK


def _refused(name: str) -> int:
    from shared.why import refusals  # deferred: validate stays light

    found = refusals(NasSettings().failed_dir, name)
    if not found:
        print(f"slurmk8s: no refusal of {name} in failed/ (see its receipt in submitted/)")
        return EXIT_REJECTED
    for path, text in found:
        print(f"{path}:\n{text}", end="" if text.endswith("\n") else "\n")
    return EXIT_OK


def replay(args: argparse.Namespace) -> int:
    """List dead-lettered messages, or requeue them with ``--yes`` (``shared.replay``)."""
    from shared.replay import command  # deferred: validate stays light (no pika)

    return command(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per command."""
    parser = argparse.ArgumentParser(prog="slurmk8s", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser("validate", help="check a job file against the submit policy")
    check.add_argument("file", type=Path, metavar="FILE")
    check.add_argument(
        "--user", help="whose job it would be (for %%u and home paths); default: you"
    )
    check.set_defaults(func=validate)
    why = commands.add_parser(
        "why", aliases=["explain"], help="what a job is doing or did, and why"
    )
    why.add_argument("jobid", metavar="JOBID|FILE", help="a job id, or a file dropped on the NAS")
    why.add_argument("--json", action="store_true", help="the facts and diagnosis as JSON")
    why.set_defaults(func=explain)
    add_status_parsers(commands)
    add_check_parser(commands)
    dead = commands.add_parser(
        "replay", help="list dead-lettered messages; --yes requeues them (after fixing the cause)"
    )
    dead.add_argument(
        "--queue",
        action="append",
        choices=["validator", "launcher", "collector"],
        help="only this service's dead letters (repeatable); default: all",
    )
    dead.add_argument("--limit", type=int, default=1000, help="at most this many (1000)")
    dead.add_argument(
        "--yes", "--apply", dest="yes", action="store_true", help="requeue (default: dry run)"
    )
    dead.set_defaults(func=replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``slurmk8s`` script."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with 2 on usage errors
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
