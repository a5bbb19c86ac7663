"""job_submit.lua, run by the Lua that slurmctld links (5.1 on Debian 12; 5.3 if that is all)."""

import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shared.jobscript.policy import REPO_PATH, load_policy
from shared.jobscript.validation import MAX_PROBLEMS, check_script
from shared.jobscript.wrapping import (
    ACCEPTED_MARK,
    WRAPPER_HEAD,
    WRAPPER_SIGNS,
    extract_original_script,
    wrap_script,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).parents[3]
JOB_SUBMIT = REPO / "slurm" / "job_submit.lua"
DRIVER = Path(__file__).with_name("driver.lua")
CASES = json.loads((REPO / "tests" / "data" / "submission_cases.json").read_text())
HOME = "/mnt/test-k8s/home/alice"
LUA = shutil.which("lua5.1") or shutil.which("lua5.3")
if LUA is None:
    pytest.skip("no lua5.1/lua5.3 interpreter", allow_module_level=True)


def script_of(case: dict[str, Any]) -> bytes:
    text = case["script"] + ("# " + "x" * 97 + "\n") * case.get("pad_lines", 0)
    return text.encode()


def run_lua(mode: str, script: bytes, tmp_path: Path, *fields: str) -> str:
    job = tmp_path / "job.sh"
    job.write_bytes(script)
    done = subprocess.run(
        [LUA, str(DRIVER), str(JOB_SUBMIT), mode, str(REPO_PATH), "alice", HOME, str(job), *fields],
        capture_output=True,
        check=True,
    )
    return done.stdout.decode()


def python_verdict(script: bytes) -> list[str]:
    verdict = check_script(script, load_policy(REPO_PATH), user="alice", home=HOME)
    return [f"{p.line}\t{p.message}" for p in verdict.problems]


@pytest.mark.parametrize("case", CASES["bad"] + CASES["good"], ids=lambda c: c["name"])
def test_lua_reports_exactly_what_python_reports(case: dict[str, Any], tmp_path: Path) -> None:
    script = script_of(case)
    expected = python_verdict(script)
    assert bool(expected) == (case in CASES["bad"])
    assert run_lua("check", script, tmp_path).splitlines() == expected


def test_lua_wrapper_equals_python_wrapper(tmp_path: Path) -> None:
    for script in (
        b"",
        b"a",
        b"ab",
        (REPO / "examples" / "hello.sh").read_bytes(),
        bytes(range(256)),
    ):
        wrapped = run_lua("wrap", script, tmp_path)
        assert wrapped == wrap_script(script)
        assert extract_original_script(wrapped) == script


def submit_with_comment(
    tmp_path: Path, script: bytes, *fields: str
) -> tuple[str, list[str], str, str]:
    rc, messages, new_script, comment, _admin = submit_full(tmp_path, script, *fields)
    return rc, messages, new_script, comment


def submit_full(
    tmp_path: Path, script: bytes, *fields: str
) -> tuple[str, list[str], str, str, str]:
    """rc, user messages, the (maybe wrapped) script, comment, admin_comment."""
    out = run_lua("submit", script, tmp_path, *fields)
    head, _, new_script = out.partition("script:\n")
    lines = head.splitlines()
    comment = lines[1].removeprefix("comment=")
    admin = lines[2].removeprefix("admin_comment=")
    return lines[0], lines[3:], new_script, comment, admin


def submit(tmp_path: Path, script: bytes, *fields: str) -> tuple[str, list[str], str]:
    rc, messages, new_script, _comment = submit_with_comment(tmp_path, script, *fields)
    return rc, messages, new_script


def test_plain_slurm_job_passes_untouched(tmp_path: Path) -> None:
    plain = b"#!/bin/bash\n#SBATCH -c 64 --uid=0\necho plain\n"
    assert submit(tmp_path, plain) == ("rc=0", [], plain.decode())


def test_good_k8s_job_is_wrapped(tmp_path: Path) -> None:
    hello = (REPO / "examples" / "hello.sh").read_bytes()
    rc, messages, new_script = submit(tmp_path, hello, "cpus_per_task=1", "num_tasks=1")
    assert (rc, messages) == ("rc=0", [])
    assert extract_original_script(new_script) == hello


def modify(tmp_path: Path, *fields: str) -> list[str]:
    return run_lua("modify", b"", tmp_path, *fields).splitlines()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (("min_nodes=2",), "file: multi-node jobs are not supported yet (scontrol update)"),
        (("min_cpus=8",), "file: asks for 8 CPUs; the limit is 2 (scontrol update)"),
        (("pn_min_cpus=64",), "file: asks for 64 CPUs; the limit is 2 (scontrol update)"),
        (("tres_per_socket=gres:gpu:8",), "file: --gpus-per-socket is not allowed"),
        (("min_mem_per_node=64000",), "file: asks for 64000 MB of memory"),
        (("tres_per_node=gres:gpu:8",), "file: asks for 8 GPUs; the limit is 4"),
        (("std_out=/tmp/x.out",), "file: --output '/tmp/x.out' (in /mnt/test-k8s/home/alice)"),
        (("work_dir=/tmp",), "file: --chdir '/tmp' is outside the folders you may use"),
        (("comment=x",), "file: the comment of a slurm-k8s job holds its submission key"),
    ],
)
def test_owner_cannot_update_a_slurm_k8s_job_out_of_policy(
    tmp_path: Path, fields: tuple[str, ...], expected: str
) -> None:
    out = modify(
        tmp_path, "rec.admin_comment=slurmk8s-accepted", "rec.comment=slurmk8s-key=abc", *fields
    )
    assert out[0] == "rc=-1"
    assert any(m.startswith(expected) for m in out[1:]), out


@pytest.mark.parametrize(
    "fields",
    [
        ("rec.admin_comment=slurmk8s-accepted", "time_limit=10", "std_out=/mnt/test-k8s/results/x"),
        ("rec.comment=", "min_nodes=4"),  # a plain Slurm job
        # The Comment is no proof: a plain job whose owner wrote the marker is still plain.
        ("rec.comment=slurmk8s-key=abc", "min_nodes=4"),
        ("rec.admin_comment=slurmk8s", "min_nodes=4"),
        ("rec.admin_comment=slurmk8s-accepted", "uid=0", "comment=slurmk8s; reason=OOMKilled"),
    ],
)
def test_allowed_updates(tmp_path: Path, fields: tuple[str, ...]) -> None:
    assert modify(tmp_path, *fields) == ["rc=0"]


def test_slurm_k8s_jobs_are_marked_in_their_comment_plain_jobs_are_not(tmp_path: Path) -> None:
    hello = (REPO / "examples" / "hello.sh").read_bytes()
    assert submit_with_comment(tmp_path, hello)[3] == "slurmk8s"
    key = "comment=slurmk8s-key=0123"
    assert submit_with_comment(tmp_path, hello, key)[3] == "slurmk8s-key=0123"
    assert submit_with_comment(tmp_path, b"#!/bin/sh\necho\n")[3] == "nil"


def test_the_key_may_carry_a_trace_context_and_nothing_else(tmp_path: Path) -> None:
    hello = (REPO / "examples" / "hello.sh").read_bytes()
    traced = f"slurmk8s-key=0456; traceparent=00-{'a' * 32}-{'b' * 16}-01"
    assert submit_with_comment(tmp_path, hello, f"comment={traced}")[3] == traced
    for bad in (
        f"slurmk8s-key=0789; traceparent=00-{'A' * 32}-{'b' * 16}-01",
        f"slurmk8s-key=078a; traceparent=00-{'a' * 32}-{'b' * 16}-01; x=y",
        "slurmk8s-key=078b; traceparent=00-abc-def-01",
    ):
        rc, messages, _script, _comment = submit_with_comment(tmp_path, hello, f"comment={bad}")
        assert rc == "rc=-1"
        assert any("--comment is not allowed" in m for m in messages)


def test_bad_job_is_refused_one_problem_per_line(tmp_path: Path) -> None:
    bad = b"#!/bin/bash\n#SBATCH --uid=0 -c 64\n#K8S_IMAGE=docker.io/x\necho\n"
    rc, messages, new_script = submit(tmp_path, bad)
    assert rc == "rc=-1"
    assert messages == [
        "line 2: --uid is not allowed: it changes who the job runs as",
        "line 2: asks for 64 CPUs; the limit is 2",
        "line 3: #K8S_IMAGE registry 'docker.io' is not allowed (allowed: nas-hub.local:5407)",
    ]
    assert new_script == bad.decode()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (("cpus_per_task=64",), "file: asks for 64 CPUs; the limit is 2"),
        (("pn_min_cpus=64",), "file: asks for 64 CPUs; the limit is 2"),  # --mincpus=64
        (("tres_per_socket=gres:gpu:8",), "file: --gpus-per-socket is not allowed"),
        (("min_mem_per_node=64000",), "file: asks for 64000 MB of memory"),
        (("tres_per_node=gres:gpu:8",), "file: asks for 8 GPUs; the limit is 4"),
        (("min_nodes=2", "max_nodes=4"), "file: multi-node jobs are not supported yet"),
        (("array_inx=0-999",), "file: the job array has 1000 tasks"),
        (("container=/tmp/oci",), "file: --container is not allowed"),
        (("tres_per_job=gres:gpu:2", "mem_per_tres=gres:gpu:9216"), "file: asks for 18432 MB"),
        (("tres_per_job=gres:gpu:2", "cpus_per_tres=gres:gpu:2"), "file: asks for 4 CPUs"),
        (("std_err=/etc/x",), "file: --error '/etc/x' (in /mnt/test-k8s/home/alice) is outside"),
    ],
)
def test_values_set_outside_the_script_are_checked(
    tmp_path: Path, fields: tuple[str, ...], expected: str
) -> None:
    hello = (REPO / "examples" / "hello.sh").read_bytes()
    rc, messages, _ = submit(tmp_path, hello, *fields)
    assert rc == "rc=-1"
    assert any(m.startswith(expected) for m in messages), messages


FRAGMENTS = [
    "#SBATCH -c {n}",
    "#SBATCH --cpus-per-task={n} --ntasks {n}",
    "#SBATCH -n{n} --mincpus={n}",
    "#SBATCH --mem={n}{unit}",
    "#SBATCH --mem-per-cpu={n}{unit}",
    "#SBATCH --mem-per-gpu={n}G --gpus={n}",
    "#SBATCH --gres=gpu:{n}",
    "#SBATCH --gres=gpu:a100:{n},nic:1",
    "#SBATCH -G a100:{n}",
    "#SBATCH --gpus-per-task={n} -n {n}",
    "#SBATCH --cpus-per-gpu={n} --gpus-per-node={n}",
    "#SBATCH -N {n}-{n}",
    "#SBATCH --nodes={n}",
    "#SBATCH -a 0-{n}00%{n}",
    "#SBATCH --array=1,{n},7:{n}",
    "#SBATCH -o {path}",
    "#SBATCH --error={path}",
    '#SBATCH "--input={path}"',
    "#SBATCH -D {path}",
    "#SBATCH --chdir={path} -o out/%j.log",
    "#SBATCH --export={export}",
    "#SBATCH --{refused}",
    "#SBATCH --{refused}=x",
    "#SBATCH --job-name={name}",
    "#SBATCH --ti 10 --par gpu  # comment --uid=0",
    "#SBATCH --mem",
    "#SBATCH -Z",
    "#SBATCH hetjob",
    "#SBATCH 'unterminated",
    "#SLURM -c {n}",
    "#PBS -l nodes={n}",
    "#BSUB -n {n}",
    "  #SBATCH -c 99",
    "#K8S_IMAGE={image}",
    "#K8S_SHM={n}{unit}",
    "#K8S_{k8s}=1",
    "#K8S_broken",
    "# a comment",
    "",
]
BODY = ["echo hi", "if true; then", "fi", "#SBATCH -c 64", "#K8S_IMAGE=x/y", "done"]
CHOICES = {
    "n": ["0", "1", "2", "3", "5", "17", "x", "-1"],
    "unit": ["", "K", "M", "G", "T", "g", "X"],
    "path": [
        "/mnt/test-k8s/results/%j.out", "/mnt/test-k8s/home/%u/a", "/etc/passwd", "rel/%x.out",
        "../bob/x", "/mnt/test-k8s//results/../home/alice/x", "/dev/null", "/mnt/test-k8s/resultsX",
    ],
    "export": ["ALL", "NONE", "ALL,X=1", "PATH"],
    "refused": ["uid", "gid", "container", "get-user-env", "wrap", "bb", "x11", "comment", "wait"],
    "name": ["hello", "a/b", "x y"],
    "image": [
        "nas-hub.local:5407/alpine:latest", "docker.io/library/alpine", "alpine", "",
        "nas-hub.local:5407/Alpine", "nas-hub.local:5407/a__b/c-d.e:v1@sha256:" + "a" * 64,
        "nas-hub.local:99999/a", "localhost/x:1", "nas-hub.local:5407/a..b",
    ],
    "k8s": ["IMAGE", "SHM", "FOO", "image"],
}  # fmt: skip


def random_script(rng: random.Random) -> bytes:
    lines = [rng.choice(["#!/bin/bash", "#!/usr/bin/env sh", "#!/usr/bin/python3", "echo"])]
    for _ in range(rng.randint(0, 8)):
        fragment = rng.choice(FRAGMENTS)
        lines.append(fragment.format(**{k: rng.choice(v) for k, v in CHOICES.items()}))
    lines += rng.sample(BODY, rng.randint(0, 3))
    text = "\n".join(lines) + rng.choice(["\n", "", "\r\n"])
    return text.encode()


def test_lua_and_python_agree_on_generated_scripts(tmp_path: Path) -> None:
    rng = random.Random(20261129)  # fixed seed: the same scripts every run
    for _ in range(150):
        script = random_script(rng)
        assert run_lua("check", script, tmp_path).splitlines() == python_verdict(script), script


def test_unreadable_policy_refuses_only_slurm_k8s_jobs(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-policy.conf")
    job = tmp_path / "job.sh"
    for script, rc in (
        (b"#!/bin/sh\necho plain\n", "rc=0"),
        (b"#!/bin/sh\n#K8S_IMAGE=a/b\n", "rc=-1"),
    ):
        job.write_bytes(script)
        done = subprocess.run(
            [LUA, str(DRIVER), str(JOB_SUBMIT), "submit", missing, "alice", HOME, str(job)],
            capture_output=True,
            check=True,
        )
        assert done.stdout.decode().splitlines()[0] == rc


def test_the_controller_refuses_a_key_it_accepted_moments_ago(tmp_path: Path) -> None:
    hello = (REPO / "examples" / "hello.sh").read_bytes()
    key = "comment=slurmk8s-key=0123abcd"
    out = run_lua("twice", hello, tmp_path, key).splitlines()
    assert out[0] == "rc=0"
    assert out[1] == "rc=-1"
    assert out[2].startswith("file: slurm-k8s: this submission key was submitted moments ago")
    assert run_lua("twice-later", hello, tmp_path, key).splitlines() == ["rc=0", "rc=0"]
    # Without a validator key (plain sbatch) the same script may be submitted again.
    assert run_lua("twice", hello, tmp_path).splitlines() == ["rc=0", "rc=0"]


# ---- issue 7: bounded checks, forged wrappers, the AdminComment mark, owners, comments ----


def test_lua_shares_the_python_constants(tmp_path: Path) -> None:
    out = dict(line.split("=", 1) for line in run_lua("constants", b"", tmp_path).splitlines())
    assert out == {
        "ACCEPTED_MARK": ACCEPTED_MARK,
        "MAX_PROBLEMS": str(MAX_PROBLEMS),
        "WRAPPER_SIGNS": "|".join(WRAPPER_SIGNS),
    }


PATHOLOGICAL_UNITS = [
    "#SBATCH --outp=/x\n",
    "#SBATCH -J x\n",
    "#SBATCH -o /etc/x -e /etc/y --uid=0\n",
    "#SBATCH -Z --outp=/x -Z\n",
    "#K8S_FOO=1\n",
    "#K8S_IMAGE=nas-hub.local:5407/alpine:latest\n",
    "#PBS -l x\n",
    "# " + " " * 300 + "x\n",
    "#K8S_SHM=1" + " " * 3000 + "x\n",
    "#K8S_IMAGE=" + " \t " * 1000 + "nas-hub.local:5407/a" + " " * 1000 + "\n",
    "#SBATCH -o '/x" + " y" * 2000 + "'\n",
]


@pytest.mark.parametrize("unit", PATHOLOGICAL_UNITS)
@pytest.mark.parametrize("repeat", [1, 19, 20, 21, 400])
def test_many_problems_are_cut_the_same_way(tmp_path: Path, unit: str, repeat: int) -> None:
    head = "#!/bin/bash\n#K8S_IMAGE=nas-hub.local:5407/alpine:latest\n"
    script = (head + unit * repeat + "echo hi\n#K8S_LATE=1\n" * (repeat % 7)).encode()
    lua = run_lua("check", script, tmp_path).splitlines()
    assert lua == python_verdict(script)
    assert len(lua) <= MAX_PROBLEMS + 1
    if len(lua) == MAX_PROBLEMS + 1:
        assert lua[-1].startswith("0\t... and ")
        assert lua[-1].endswith(f"more problems (only the first {MAX_PROBLEMS} are listed)")


def test_lua_and_python_cut_long_generated_scripts_alike(tmp_path: Path) -> None:
    rng = random.Random(7)  # fixed seed; long scripts so that problems overflow the list
    for _ in range(40):
        lines = ["#!/bin/bash"]
        for _ in range(rng.randint(15, 60)):
            fragment = rng.choice(FRAGMENTS)
            lines.append(fragment.format(**{k: rng.choice(v) for k, v in CHOICES.items()}))
        lines += rng.sample(BODY, rng.randint(0, 6))
        script = ("\n".join(lines) + "\n").encode()
        assert run_lua("check", script, tmp_path).splitlines() == python_verdict(script), script


def test_an_oversized_script_gets_one_problem_and_is_not_parsed(tmp_path: Path) -> None:
    limit = load_policy(REPO_PATH).max_script_bytes
    head = "#!/bin/bash\n#K8S_IMAGE=docker.io/x\n#SBATCH --uid=0\n"
    script = (head + "#SBATCH --outp=/x\n" * (limit // 18)).encode()
    expected = [f"0\tthe file is {len(script)} bytes; the limit is {limit} bytes"]
    assert python_verdict(script) == expected
    assert run_lua("check", script, tmp_path).splitlines() == expected
    rc, messages, _ = submit(tmp_path, script)
    assert (rc, messages) == ("rc=-1", ["file: " + expected[0].split("\t")[1]])


def test_a_bom_is_named(tmp_path: Path) -> None:
    hello = (REPO / "examples" / "hello.sh").read_bytes()
    rc, messages, _ = submit(tmp_path, b"\xef\xbb\xbf" + hello)
    assert (rc, messages) == (
        "rc=-1",
        ["line 1: starts with a byte-order mark (BOM); save the file as UTF-8 without BOM"],
    )


EVIL = b"#!/bin/bash\n#K8S_IMAGE=evil.example.com/miner:latest\n#K8S_SHM=100000\nminer\n"


@pytest.mark.parametrize(
    ("script", "line"),
    [
        (wrap_script(EVIL).encode(), 3),  # the attack: no top-level #K8S_ line
        (wrap_script(EVIL).replace("# slurm-k8s:", "# x:").encode(), 3),
        (WRAPPER_HEAD.encode() + b"echo\n", 3),
        (b"#!/bin/sh\necho\n# slurm-k8s-original-script-base64:\n# ZWNobwo=\n", 3),
        (b"#!/bin/sh\nexec /opt/slurm-k8s/venv/bin/python -m services.runner\n", 2),
    ],
)
def test_a_forged_wrapper_is_refused_even_as_a_plain_job(
    tmp_path: Path, script: bytes, line: int
) -> None:
    rc, messages, new_script = submit(tmp_path, script)
    assert rc == "rc=-1"
    assert len(messages) == 1
    assert messages[0].startswith(f"line {line}: contains '")
    assert "only slurm-k8s's own wrapper may carry" in messages[0]
    assert new_script == script.decode()


def test_an_accepted_job_is_marked_in_its_admin_comment(tmp_path: Path) -> None:
    hello = (REPO / "examples" / "hello.sh").read_bytes()
    rc, _, _, comment, admin = submit_full(tmp_path, hello)
    assert (rc, comment, admin) == ("rc=0", "slurmk8s", ACCEPTED_MARK)
    rc, _, _, comment, admin = submit_full(tmp_path, hello, "comment=slurmk8s-key=0a1b")
    assert (rc, comment, admin) == ("rc=0", "slurmk8s-key=0a1b", ACCEPTED_MARK)
    assert submit_full(tmp_path, b"#!/bin/sh\necho\n")[3:] == ("nil", "nil")  # plain: unmarked


@pytest.mark.parametrize("plain", [False, True])
def test_only_root_may_submit_an_admin_comment(tmp_path: Path, plain: bool) -> None:
    script = b"#!/bin/sh\necho\n" if plain else (REPO / "examples" / "hello.sh").read_bytes()
    rc, messages, _ = submit(tmp_path, script, "admin_comment=slurmk8s-accepted")
    assert rc == "rc=-1"
    assert messages == [
        "file: AdminComment is written by Slurm administrators and slurm-k8s only; "
        "submit the job without it"
    ]
    if plain:  # root's plain jobs are none of our business
        assert submit(tmp_path, script, "admin_comment=x", "submit_uid=0")[0] == "rc=0"


MIN_UID_TEXT = (
    "file: slurm-k8s jobs run as their owner; root and system accounts (uid < 1000 or > 60000) "
    "cannot submit them"
)


@pytest.mark.parametrize(
    "fields",
    [
        ("submit_uid=0",),
        ("submit_uid=1",),
        ("submit_uid=999",),
        ("user_id=0",),
        ("submit_uid=65534",),
        ("user_id=65534",),
    ],
)
def test_root_and_system_accounts_cannot_submit_slurm_k8s_jobs(
    tmp_path: Path, fields: tuple[str, ...]
) -> None:
    hello = (REPO / "examples" / "hello.sh").read_bytes()
    assert submit(tmp_path, hello, *fields)[:2] == ("rc=-1", [MIN_UID_TEXT])
    plain = b"#!/bin/sh\necho\n"
    assert submit(tmp_path, plain, *fields)[0] == "rc=0"  # plain Slurm jobs: Slurm's business


@pytest.mark.parametrize(
    "comment", ["x", "slurmk8s", "slurmk8s-key=", "slurmk8s-key=ABC", "slurmk8s-key=0a; x"]
)
def test_a_slurm_k8s_job_keeps_its_comment_for_the_key(tmp_path: Path, comment: str) -> None:
    hello = (REPO / "examples" / "hello.sh").read_bytes()
    rc, messages, _ = submit(tmp_path, hello, f"comment={comment}")
    assert rc == "rc=-1"
    assert messages == [
        "file: --comment is not allowed: slurm-k8s records its submission key in the job "
        "comment (set outside the script, e.g. on the sbatch command line)"
    ]


def test_a_comment_in_the_script_is_reported_once(tmp_path: Path) -> None:
    script = b"#!/bin/sh\n#SBATCH --comment=x\n#K8S_IMAGE=nas-hub.local:5407/a\necho\n"
    rc, messages, _ = submit(tmp_path, script, "comment=x")
    assert rc == "rc=-1"
    assert [m for m in messages if "--comment" in m] == [
        "line 2: --comment is not allowed: slurm-k8s records its submission key in the job comment"
    ]


def test_k8s_script_lookup_is_the_same_in_lua_and_python(tmp_path: Path) -> None:
    """#K8S_SCRIPT on a real tree (as root, like the validator and the launcher): both walks
    give the same verdict, byte for byte, for readable, private, missing, linked and hostile
    programs."""
    import os

    from shared.jobscript.policy import parse_policy

    if os.geteuid() != 0:
        pytest.skip("the tree needs files of other uids (chown needs root)")
    nas = tmp_path / "nas"
    (nas / "scripts").mkdir(parents=True)
    (nas / "scripts").chmod(0o1777)
    (nas / "home" / "bob").mkdir(parents=True)
    (nas / "home" / "bob").chmod(0o750)
    os.chown(nas / "home" / "bob", 2002, 2002)
    tmp_path.chmod(0o755)
    for name, mode, uid in (
        ("ok.py", 0o644, 2001),
        ("mine.py", 0o400, 2001),
        ("bobs.py", 0o600, 2002),
        ("grp.py", 0o040, 2002),
    ):
        (nas / "scripts" / name).write_text("print(1)\n")
        os.chown(nas / "scripts" / name, uid, 2000 if name == "grp.py" else uid)
        (nas / "scripts" / name).chmod(mode)
    (nas / "home" / "bob" / "secret.py").write_text("x\n")
    (nas / "scripts" / "link.py").symlink_to(nas / "scripts" / "ok.py")
    (nas / "via").symlink_to(nas / "home" / "bob")
    policy_file = tmp_path / "policy.conf"
    policy_file.write_text(REPO_PATH.read_text() + f"\nscript_roots = {nas}\n")
    policy = parse_policy(policy_file.read_text())
    values = [
        f"{nas}/scripts/{n}" for n in ("ok.py", "mine.py", "bobs.py", "grp.py", "link.py", "no.py")
    ] + [
        f"{nas}/home/bob/secret.py",
        f"{nas}/home/bob/none.py",
        f"{nas}/via/secret.py",
        f"{nas}/scripts",
        f"{nas}/it's.py",
        "/etc/passwd",
        "rel.py",
        f"{nas}/../x.py",
    ]
    verdicts = []
    for value in values:
        script = (
            "#!/bin/bash\n#SBATCH --output=/mnt/test-k8s/results/%j.out\n"
            f"#K8S_IMAGE=nas-hub.local:5407/alpine:latest\n#K8S_SCRIPT={value}\necho hi\n"
        ).encode()
        job = tmp_path / "job.sh"
        job.write_bytes(script)
        lua = subprocess.run(
            [LUA, str(DRIVER), str(JOB_SUBMIT), "check", str(policy_file), "alice", HOME, str(job)],
            capture_output=True,
            check=True,
        ).stdout.decode()
        python = check_script(script, policy, user="alice", home=HOME).problems
        assert lua.splitlines() == [f"{p.line}\t{p.message}" for p in python], value
        verdicts.append(lua)
    assert verdicts[0] == verdicts[1] == verdicts[3] == ""  # other, owner, group can read
    assert "cannot be read by alice (mode 0600)" in verdicts[2]
    assert "is a symlink" in verdicts[4]
    assert "does not exist" in verdicts[5]
    assert verdicts[6].replace("secret", "none") == verdicts[7]  # nothing told past bob's door
