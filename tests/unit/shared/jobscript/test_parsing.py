import pytest

from shared.jobscript.parsing import parse_script, tokenise

pytestmark = pytest.mark.unit


def opts(text: str) -> list[tuple[int, str, str | None]]:
    return [(o.line, o.name, o.value) for o in parse_script(text).options]


def messages(text: str) -> list[tuple[int, str]]:
    return [(p.line, p.message) for p in parse_script(text).problems]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("--job-name=hello", ["--job-name=hello"]),
        ('--job-name="my job" -c 2', ["--job-name=my job", "-c", "2"]),
        ("--job-name='it''s'", ["--job-name=its"]),
        (r"--job-name=a\ b", ["--job-name=a", "b"]),  # as sbatch 22.05 does (lab-verified)
        (r'--job-name="a\ b"', ["--job-name=a b"]),
        (r"--job-name=a\#b", ["--job-name=a#b"]),
        ("--job-name=a\\", ["--job-name=a"]),
        (r"-J a\  -c 1", ["-J", "a", "-c", "1"]),
        (r"--job-name=x'y z'w", ["--job-name=xy zw"]),
        (r"--job-name='a\'b'", ["--job-name=a'b"]),
        ("--mem=1G # a comment -c 64", ["--mem=1G"]),
        ("--mem=1G#comment", ["--mem=1G"]),
        ('--job-name="a#b"', ["--job-name=a#b"]),
        ("   ", []),
    ],
)
def test_tokenise_like_sbatch(text: str, words: list[str]) -> None:
    assert tokenise(text) == words


def test_option_forms() -> None:
    script = (
        "#!/bin/bash\n"
        "#SBATCH --cpus-per-task=2\n"
        "#SBATCH --mem 1G\n"
        "#SBATCH -n 1\n"
        "#SBATCH -c2\n"
        "#SBATCH -Hc 3\n"
        "#SBATCH --exclusive\n"
        "#SBATCH --out=/x/%j.out\n"
    )
    assert opts(script) == [
        (2, "cpus-per-task", "2"),
        (3, "mem", "1G"),
        (4, "ntasks", "1"),
        (5, "cpus-per-task", "2"),
        (6, "hold", None),
        (6, "cpus-per-task", "3"),
        (7, "exclusive", None),
        (8, "output", "/x/%j.out"),  # getopt_long accepts a unique prefix
    ]


def test_stop_rule_blank_and_comment_lines_continue_the_block() -> None:
    script = (
        "#!/bin/sh\n"
        "\n"
        "# a comment\n"
        "   # an indented comment\n"
        "#SBATCH -c 1\n"
        "echo start\n"
        "#SBATCH -c 64\n"
    )
    parsed = parse_script(script)
    assert opts(script) == [(5, "cpus-per-task", "1")]
    assert parsed.first_command_line == 6


def test_indented_sbatch_is_a_comment_not_a_directive() -> None:
    assert opts("#!/bin/sh\n  #SBATCH -c 64\n") == []


def test_legacy_slurm_prefix_is_a_directive() -> None:
    assert opts("#!/bin/sh\n#SLURM --mem=2G\n") == [(2, "mem", "2G")]


@pytest.mark.parametrize("prefix", ["#PBS", "#BSUB"])
def test_foreign_directives_are_refused(prefix: str) -> None:
    problems = messages(f"#!/bin/sh\n{prefix} -l nodes=4\necho\n")
    assert problems[0][0] == 2
    assert f"{prefix} directives are not accepted" in problems[0][1]


def test_foreign_directives_after_the_block_are_ignored_like_sbatch() -> None:
    assert messages("#!/bin/sh\necho\n#PBS -l nodes=4\n") == []


@pytest.mark.parametrize("word", ["hetjob", "packjob"])
def test_hetjob_separator_is_refused(word: str) -> None:
    problems = messages(f"#!/bin/sh\n#SBATCH -c 1\n#SBATCH {word}\n#SBATCH -c 1\n")
    assert problems == [
        (
            3,
            f"'{word}' starts another job component: heterogeneous (multi-component) jobs "
            "are not supported",
        )
    ]


def test_comment_after_options_is_ignored() -> None:
    assert opts("#!/bin/sh\n#SBATCH -c 1 # --uid=0\n") == [(2, "cpus-per-task", "1")]


def test_unknown_and_ambiguous_options() -> None:
    problems = messages("#!/bin/sh\n#SBATCH --frobnicate --mem-per -Z\n")
    assert problems[0] == (2, "--frobnicate is not an sbatch option")
    assert "--mem-per is ambiguous" in problems[1][1]
    assert problems[2] == (2, "-Z is not an sbatch option")


def test_missing_value_and_unclosed_quote() -> None:
    assert messages("#!/bin/sh\n#SBATCH --mem\n") == [(2, "--mem needs a value")]
    assert messages('#!/bin/sh\n#SBATCH --job-name="x\n')[0][1].endswith("never closed")


def test_k8s_directives_keep_their_lines() -> None:
    parsed = parse_script("#!/bin/sh\n#K8S_IMAGE=a/b\n#SBATCH -c1\n#K8S_SHM = 1G\necho\n#K8S_X=1\n")
    assert [(d.line, d.name, d.value) for d in parsed.k8s] == [
        (2, "IMAGE", "a/b"),
        (4, "SHM", "1G"),
    ]
    assert parsed.late_k8s_lines == (6,)


def test_shebang_is_recorded() -> None:
    assert parse_script("#!/bin/bash -l\n").shebang == "#!/bin/bash -l"
    assert parse_script("echo\n").shebang is None


def test_only_c_whitespace_counts_like_sbatch() -> None:
    # "\x1c" is whitespace to Python but not to C's isspace(): sbatch stops at this line.
    parsed = parse_script("#!/bin/sh\n\x1c#SBATCH -c 1\n#SBATCH -c 64\n")
    assert parsed.first_command_line == 2
    assert parsed.options == ()
