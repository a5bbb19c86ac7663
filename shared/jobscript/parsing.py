"""Reading a job script's directives the way sbatch does, and nothing more.

sbatch (``src/sbatch/opt.c``, ``_opt_batch_script``) reads options only from the leading comment
block: lines that start exactly with ``#SBATCH`` or the legacy ``#SLURM`` are directives, and the
first line that is neither blank nor a comment ends the block. Options are tokenised like a shell
word list (quotes, backslash escapes, an unquoted ``#`` starts a comment) and parsed with
``getopt_long``, which also accepts unambiguous prefixes of long options (``--out`` is
``--output``). A validator that reads fewer forms than sbatch can be bypassed, so this parser
mirrors them, and ``slurm/job_submit.lua`` mirrors this parser.

``#PBS`` and ``#BSUB`` lines in the block are translated by sbatch (``xlate.c``); we do not
translate them, we refuse them, so they cannot carry options past the checks. ``#K8S_NAME=value``
lines are slurm-k8s's own directives, read from the same block.

This module only parses; what is allowed is decided in ``validation``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from shared.messages import Problem


class Arg(Enum):
    """How a long option takes its argument (getopt_long's has_arg)."""

    NONE = 0
    REQUIRED = 1
    OPTIONAL = 2


_N, _R, _O = Arg.NONE, Arg.REQUIRED, Arg.OPTIONAL

#: Long options sbatch 22.05 knows, and whether they take an argument.
LONG_OPTIONS: dict[str, Arg] = {
    "account": _R, "acctg-freq": _R, "array": _R, "batch": _R, "bb": _R, "bbf": _R,
    "begin": _R, "chdir": _R, "cluster-constraint": _R, "clusters": _R, "comment": _R,
    "constraint": _R, "container": _R, "contiguous": _N, "core-spec": _R,
    "cores-per-socket": _R, "cpu-freq": _R, "cpus-per-gpu": _R, "cpus-per-task": _R,
    "deadline": _R, "delay-boot": _R, "dependency": _R, "distribution": _R, "error": _R,
    "exclude": _R, "exclusive": _O, "export": _R, "export-file": _R, "extra-node-info": _R,
    "get-user-env": _O, "gid": _R, "gpu-bind": _R, "gpu-freq": _R, "gpus": _R,
    "gpus-per-node": _R, "gpus-per-socket": _R, "gpus-per-task": _R, "gres": _R,
    "gres-flags": _R, "help": _N, "hint": _R, "hold": _N, "ignore-pbs": _N, "input": _R,
    "job-name": _R, "kill-on-invalid-dep": _R, "licenses": _R, "mail-type": _R,
    "mail-user": _R, "mcs-label": _R, "mem": _R, "mem-bind": _R, "mem-per-cpu": _R,
    "mem-per-gpu": _R, "mincpus": _R, "network": _R, "nice": _O, "no-kill": _O,
    "no-requeue": _N, "nodefile": _R, "nodelist": _R, "nodes": _R, "ntasks": _R,
    "ntasks-per-core": _R, "ntasks-per-gpu": _R, "ntasks-per-node": _R,
    "ntasks-per-socket": _R, "open-mode": _R, "output": _R, "overcommit": _N,
    "oversubscribe": _N, "parsable": _N, "partition": _R, "power": _R, "prefer": _R,
    "priority": _R, "profile": _R, "propagate": _O, "qos": _R, "quiet": _N, "reboot": _N,
    "requeue": _N, "reservation": _R, "signal": _R, "sockets-per-node": _R,
    "spread-job": _N, "switches": _R, "test-only": _N, "thread-spec": _R,
    "threads-per-core": _R, "time": _R, "time-min": _R, "tmp": _R, "uid": _R, "usage": _N,
    "use-min-nodes": _N, "verbose": _N, "version": _N, "wait": _N, "wait-all-nodes": _R,
    "wckey": _R, "wrap": _R, "x11": _O,
}  # fmt: skip

#: sbatch's short options: the long option each stands for, and whether it takes a value.
SHORT_OPTIONS: dict[str, str] = {
    "A": "account", "a": "array", "b": "begin", "B": "extra-node-info", "c": "cpus-per-task",
    "C": "constraint", "d": "dependency", "D": "chdir", "e": "error", "F": "nodefile",
    "G": "gpus", "h": "help", "H": "hold", "i": "input", "J": "job-name", "k": "no-kill",
    "L": "licenses", "m": "distribution", "M": "clusters", "n": "ntasks", "N": "nodes",
    "o": "output", "O": "overcommit", "p": "partition", "q": "qos", "Q": "quiet",
    "s": "oversubscribe", "S": "core-spec", "t": "time", "u": "usage", "v": "verbose",
    "V": "version", "w": "nodelist", "W": "wait", "x": "exclude",
}  # fmt: skip
# getopt's optional short arguments ("k::") only attach (-kvalue); treat them as flags.
_SHORT_TAKES_VALUE = {s for s, name in SHORT_OPTIONS.items() if LONG_OPTIONS[name] is Arg.REQUIRED}

DIRECTIVE_PREFIXES = ("#SBATCH", "#SLURM")
FOREIGN_PREFIXES = ("#PBS", "#BSUB")
K8S_PREFIX = "#K8S_"
HETJOB_WORDS = ("hetjob", "packjob")
# C's isspace() in the C locale, which sbatch uses; str.isspace() would also accept
# Unicode separators and \x1c-\x1f, reading directives past the point where sbatch stops.
C_SPACE = " \t\n\v\f\r"


@dataclass(frozen=True)
class Option:
    """One sbatch option from a directive line, under its canonical long name."""

    line: int
    name: str
    value: str | None
    spelled: str  # as written, for messages (e.g. "-c" or "--cpus")


@dataclass(frozen=True)
class K8sDirective:
    """A ``#K8S_NAME=value`` line: ``name`` without the prefix, e.g. ``IMAGE``."""

    line: int
    name: str
    value: str


@dataclass(frozen=True)
class ParsedScript:
    """What sbatch would read from a script, plus what the parser refused to read."""

    options: tuple[Option, ...]
    k8s: tuple[K8sDirective, ...]
    problems: tuple[Problem, ...]
    shebang: str | None
    first_command_line: int  # 0 when the script has no command at all
    late_k8s_lines: tuple[int, ...] = field(default=())  # #K8S_ lines sbatch would not read

    def last(self, name: str) -> Option | None:
        """The option as sbatch applies it: a later directive overrides an earlier one."""
        found = [o for o in self.options if o.name == name]
        return found[-1] if found else None

    def k8s_value(self, name: str) -> K8sDirective | None:
        """The (first) ``#K8S_<name>`` directive."""
        return next((d for d in self.k8s if d.name == name), None)


class TokenError(ValueError):
    """A directive line cannot be split into words (an unterminated quote)."""


def tokenise(text: str) -> list[str]:
    """Split the option part of a directive like sbatch's ``_get_argument`` does.

    Raises:
        TokenError: a quote is not closed.
    """
    words: list[str] = []
    current: list[str] = []
    in_word = False
    quote: str | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i, escaped = _escape(text, i, quoted=quote is not None)
            current.append(escaped)
            in_word = True
        elif quote is not None:
            if ch == quote:
                quote = None
            else:
                current.append(ch)
        elif ch in "'\"":
            quote, in_word = ch, True
        elif ch in C_SPACE:
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        elif ch == "#":
            break
        else:
            current.append(ch)
            in_word = True
        i += 1
    if quote is not None:
        raise TokenError(f"the {quote} quote is never closed")
    if in_word:
        words.append("".join(current))
    return words


def _escape(text: str, i: int, *, quoted: bool) -> tuple[int, str]:
    """The character a backslash at ``i`` escapes, and where it ends.

    sbatch checks for a word break before applying an escape: an unquoted backslash before
    whitespace (or at the end of the line) vanishes and the word still ends there.
    """
    if i + 1 >= len(text) or (not quoted and text[i + 1] in C_SPACE):
        return i, ""
    return i + 1, text[i + 1]


def _prefix_table() -> dict[str, tuple[str, ...]]:
    """Every prefix of every long option -> the options it could mean, sorted (built once)."""
    table: dict[str, list[str]] = {}
    for name in LONG_OPTIONS:
        for end in range(len(name) + 1):
            table.setdefault(name[:end], []).append(name)
    return {prefix: tuple(sorted(names)) for prefix, names in table.items()}


_PREFIXES = _prefix_table()


def resolve_long(spelled: str) -> tuple[str | None, str]:
    """Find the long option getopt_long would pick for ``spelled`` (exact or unique prefix).

    Returns:
        The canonical name (or None) and, when None, why.
    """
    if spelled in LONG_OPTIONS:
        return spelled, ""
    matches = _PREFIXES.get(spelled, ())
    if len(matches) == 1:
        return matches[0], ""
    if matches:
        return None, f"--{spelled} is ambiguous (could be --{', --'.join(matches)})"
    return None, f"--{spelled} is not an sbatch option"


def parse_options(line: int, words: list[str]) -> tuple[list[Option], list[Problem]]:
    """Turn one directive line's words into options, the way getopt_long reads argv."""
    options: list[Option] = []
    problems: list[Problem] = []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word in HETJOB_WORDS:
            problems.append(
                Problem(
                    line=line,
                    message=f"'{word}' starts another job component: heterogeneous "
                    "(multi-component) jobs are not supported",
                )
            )
            continue
        if word.startswith("--") and len(word) > 2:
            spelled, eq, inline = word[2:].partition("=")
            name, why = resolve_long(spelled)
            if name is None:
                problems.append(Problem(line=line, message=why))
                continue
            kind = LONG_OPTIONS[name]
            value: str | None = inline if eq else None
            if kind is Arg.NONE and eq:
                problems.append(Problem(line=line, message=f"--{name} takes no value"))
                continue
            if kind is Arg.REQUIRED and not eq:
                if i >= len(words):
                    problems.append(Problem(line=line, message=f"--{name} needs a value"))
                    continue
                value = words[i]
                i += 1
            options.append(Option(line=line, name=name, value=value, spelled=f"--{spelled}"))
        elif word.startswith("-") and len(word) > 1 and not word.startswith("--"):
            i = _parse_short_group(line, word, words, i, options, problems)
        else:
            problems.append(
                Problem(line=line, message=f"'{word}' is not an option (options start with -)")
            )
    return options, problems


def _parse_short_group(
    line: int,
    word: str,
    words: list[str],
    i: int,
    options: list[Option],
    problems: list[Problem],
) -> int:
    """Read ``-Hc2`` style groups: flags, then at most one option that takes the rest."""
    j = 1
    while j < len(word):
        letter = word[j]
        j += 1
        name = SHORT_OPTIONS.get(letter)
        if name is None:
            problems.append(Problem(line=line, message=f"-{letter} is not an sbatch option"))
            return i
        if letter not in _SHORT_TAKES_VALUE:
            options.append(Option(line=line, name=name, value=None, spelled=f"-{letter}"))
            continue
        if j < len(word):
            value = word[j:]
        elif i < len(words):
            value = words[i]
            i += 1
        else:
            problems.append(Problem(line=line, message=f"-{letter} needs a value"))
            return i
        options.append(Option(line=line, name=name, value=value, spelled=f"-{letter}"))
        return i
    return i


def split_lines(text: str) -> list[str]:
    """Lines as sbatch sees them (split on LF only; a CR stays part of its line)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _is_comment_or_blank(line: str) -> bool:
    stripped = line.lstrip(C_SPACE)
    return stripped == "" or stripped.startswith("#")


def parse_script(text: str) -> ParsedScript:
    """Parse the leading comment block of a job script.

    Args:
        text: the script, decoded (undecodable bytes kept with ``surrogateescape``).

    Returns:
        The options, ``#K8S_`` directives and parse problems, each with its line number.
    """
    options: list[Option] = []
    k8s: list[K8sDirective] = []
    problems: list[Problem] = []
    lines = split_lines(text)
    shebang = lines[0] if lines and lines[0].startswith("#!") else None
    first_command = 0
    late_k8s: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line:
            continue  # blank: neither a directive nor a command (cheap for 1,000,000 of them)
        if first_command:
            if line.startswith(K8S_PREFIX):
                late_k8s.append(number)
            continue
        if not _is_comment_or_blank(line):
            first_command = number
            continue
        prefix = next((p for p in DIRECTIVE_PREFIXES if line.startswith(p)), None)
        if prefix is not None:
            try:
                words = tokenise(line[len(prefix) :])
            except TokenError as exc:
                problems.append(Problem(line=number, message=f"{prefix} line: {exc}"))
                continue
            found, bad = parse_options(number, words)
            options.extend(found)
            problems.extend(bad)
        elif foreign := next((p for p in FOREIGN_PREFIXES if line.startswith(p)), None):
            problems.append(
                Problem(
                    line=number,
                    message=f"{foreign} directives are not accepted (sbatch would translate "
                    "them into options); write them as #SBATCH lines",
                )
            )
        elif line.startswith(K8S_PREFIX):
            directive = _parse_k8s(number, line)
            if isinstance(directive, Problem):
                problems.append(directive)
            else:
                k8s.append(directive)
    return ParsedScript(
        options=tuple(options),
        k8s=tuple(k8s),
        problems=tuple(problems),
        shebang=shebang,
        first_command_line=first_command,
        late_k8s_lines=tuple(late_k8s),
    )


def _parse_k8s(number: int, line: str) -> K8sDirective | Problem:
    name, eq, value = line[len(K8S_PREFIX) :].partition("=")
    name, value = name.strip(C_SPACE), value.strip(C_SPACE)
    if not eq or not name:
        shown = line.strip(C_SPACE)
        return Problem(line=number, message=f"'{shown}' is not of the form #K8S_NAME=value")
    return K8sDirective(line=number, name=name, value=value)
