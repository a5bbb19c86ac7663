import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.errors import PermanentError, TransientError
from shared.jobscript.wrapping import ACCEPTED_MARK
from shared.slurmctl import (
    JobStatus,
    MalformedSlurmOutput,
    SlurmCtl,
    SlurmJobUnknown,
    admin_note,
    exec_command,
    expand_output_pattern,
    gpu_count,
    gres_gpu_count,
    parse_job_status,
    parse_record,
    parse_sacct,
    parse_squeue_all,
    parse_squeue_json,
    run_command,
    stream_command,
)

# Captured on the lab (Slurm 22.05.8): job 2 held, job 3 running as alice with the job name
# "x UserId=root(0) GroupId=root(0) StdOut=/etc/passwd".
SQUEUE = (Path(__file__).parents[2] / "data" / "squeue-22.05.json").read_text()

pytestmark = pytest.mark.unit

# Shaped like Slurm 22.05's `scontrol -o show job`, with our comments in it.
SHOW_JOB = (
    "JobId=42 JobName=hello UserId=alice(2001) GroupId=nasusers(2000) MCS_label=N/A "
    "Priority=4294901758 Nice=0 Account=(null) QOS=(null) JobState=COMPLETED Reason=None "
    "Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=3:0 "
    "RunTime=00:00:05 TimeLimit=UNLIMITED SubmitTime=2026-11-29T04:00:00 "
    "StartTime=2026-11-29T04:00:01 EndTime=2026-11-29T04:00:06 Partition=debug "
    "NodeList=node1 BatchHost=node1 NumNodes=1 NumCPUs=1 "
    "TRES=cpu=1,mem=500M,node=1,billing=1,gres/gpu=2 Command=/tmp/hello.sh "
    "WorkDir=/mnt/test-k8s Comment=slurmk8s-key=abc; reason=Error "
    "AdminComment=pod=slurm-jobs/job-42-r0 phase=Failed "
    "StdErr=/mnt/test-k8s/results/42.out StdIn=/dev/null StdOut=/mnt/test-k8s/results/%j-%u.out "
    "Power="
)


def test_scontrol_record_keeps_values_with_spaces_and_equals_signs() -> None:
    fields = parse_record(SHOW_JOB)
    assert fields["Comment"] == "slurmk8s-key=abc; reason=Error"
    assert fields["AdminComment"] == "pod=slurm-jobs/job-42-r0 phase=Failed"
    assert fields["TRES"] == "cpu=1,mem=500M,node=1,billing=1,gres/gpu=2"
    assert fields["Power"] == ""


def fake(outputs: dict[str, str | Exception]) -> tuple[SlurmCtl, list[list[str]]]:
    calls: list[list[str]] = []

    def runner(argv: Sequence[str], timeout_s: float) -> str:
        calls.append(list(argv))
        result = outputs[argv[0]]
        if isinstance(result, Exception):
            raise result
        return result

    return SlurmCtl(runner), calls


def test_show_job_is_for_display() -> None:
    ctl, _ = fake({"scontrol": SHOW_JOB + "\n"})
    job = ctl.show_job(42)
    assert job is not None
    assert (job.user, job.restarts, job.state) == ("alice", 0, "COMPLETED")
    assert job.get("Account") == ""


def test_a_job_name_forges_the_text_record_but_not_the_structured_one() -> None:
    forged = SHOW_JOB.replace("JobName=hello", "JobName=x UserId=root(0) StdOut=/etc/passwd")
    assert parse_record(forged)["UserId"] == "root(0)"  # why the text decides nothing
    job = parse_squeue_json(SQUEUE, 3)
    assert job is not None
    assert job.name == "x UserId=root(0) GroupId=root(0) StdOut=/etc/passwd"
    assert (job.user, job.uid, job.gid) == ("alice", 2001, 2001)
    assert job.stdout == "/mnt/test-k8s/home/alice/cap-3.out"


def test_structured_record_of_a_running_job() -> None:
    job = parse_squeue_json(SQUEUE, 3)
    assert job is not None
    assert (job.state, job.restarts, job.node, job.partition) == ("RUNNING", 0, "vm", "gpu")
    assert (job.cpus, job.mem_mb, job.gpus, job.time_limit_s) == (1, 100, 1, 300)
    assert job.submit_time > 0
    assert job.start.startswith("20")
    assert (job.array_job_id, job.array_task_id) == (None, None)


def test_squeue_ignores_its_filters_so_the_job_is_picked_by_id() -> None:
    assert parse_squeue_json(SQUEUE, 99) is None
    job = parse_squeue_json(SQUEUE, 2)
    assert job is not None
    assert job.stdout == "/mnt/test-k8s/home/alice/o-2.out"
    assert sorted(parse_squeue_all(SQUEUE)) == [2, 3]


def _with_job(**changes: Any) -> str:
    document = json.loads(SQUEUE)
    job = next(j for j in document["jobs"] if j["job_id"] == 3)
    job.update(changes)
    return json.dumps(document)


@pytest.mark.parametrize(
    "changes", [{"user_id": "2001"}, {"group_id": None}, {"user_id": True}, {"job_id": "3"}]
)
def test_mistyped_identity_is_an_error_not_a_guess(changes: dict[str, Any]) -> None:
    text = _with_job(**changes)
    if changes.get("job_id") == "3":
        assert parse_squeue_json(text, 3) is None
        return
    with pytest.raises(MalformedSlurmOutput):
        parse_squeue_json(text, 3)
    assert 3 not in parse_squeue_all(text)


@pytest.mark.parametrize(
    "text",
    ["", "squeue: error: x", "[]", '{"jobs": 3}', '{"meta": {}', '{"jobs": [{"job_id": 2} {}]}'],
)
def test_output_that_is_not_squeues_json_is_an_error(text: str) -> None:
    with pytest.raises(MalformedSlurmOutput):
        parse_squeue_json(text, 3)


def test_the_jobs_read_one_at_a_time_are_those_of_the_whole_document() -> None:
    document = json.loads(SQUEUE)
    compact = json.dumps({"jobs": document["jobs"], "meta": document["meta"], "errors": []})
    spaced = json.dumps(document, indent=4).replace("\n", "\r\n\t")
    for text in (compact, spaced):
        assert parse_squeue_all(text) == parse_squeue_all(SQUEUE)
        assert parse_squeue_json(text, 3) == parse_squeue_json(SQUEUE, 3)
    assert parse_squeue_all('{"meta": {"x": [1, {"jobs": []}]}, "jobs": [ ]}') == {}


# squeue's own layout (captured on the lab, other jobs cut out whole): job 9104 is alice's,
# named to look like the end of its object and the start of a job 1 owned by root.
PRETTY = (Path(__file__).parents[2] / "data" / "squeue-22.05-pretty.json").read_text()


@pytest.mark.parametrize("size", [1, 5, 64, 100_000])
def test_a_job_name_cannot_make_a_job_object_of_its_own(size: int) -> None:
    chunks = [PRETTY[i : i + size] for i in range(0, len(PRETTY), size)]
    forged = parse_squeue_json(iter(chunks), 9104)
    assert forged is not None
    assert (forged.uid, forged.gid, forged.user) == (2001, 2001, "alice")
    assert forged.name.startswith('x",\n    },\n    {\n      "job_id": 1,')
    assert parse_squeue_json(iter(chunks), 1) is None
    assert sorted(parse_squeue_all(iter(chunks))) == [9104, 9105]


@pytest.mark.parametrize(
    "text",
    [
        PRETTY[: PRETTY.index('"jobs"') - 2],  # no job list
        PRETTY[: PRETTY.index('      "user_name"')],  # cut inside the job list
        PRETTY.replace('"user_id": 2001,', '"user_id": 2001,,', 1),  # the job is not JSON
    ],
)
def test_squeues_own_layout_cut_short_or_broken_is_an_error(text: str) -> None:
    with pytest.raises(MalformedSlurmOutput):
        parse_squeue_json(text, 9104)


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_squeue_read_in_chunks_of_any_size_reads_the_same(size: int) -> None:
    chunks = [SQUEUE[i : i + size] for i in range(0, len(SQUEUE), size)]
    assert parse_squeue_all(iter(chunks)) == parse_squeue_all(SQUEUE)
    # A number cut at a chunk's end is not taken before the rest of it arrives.
    assert parse_squeue_all(iter(['{"meta": 12', '3, "jobs": [', "]}"])) == {}
    with pytest.raises(MalformedSlurmOutput):
        parse_squeue_all(iter(['{"meta": 12', "3, "]))


def test_a_streamed_command_gives_its_output_and_its_errors_as_run_command() -> None:
    text = "".join(stream_command(["printf", "h\\303\\251\\nx"], 5))
    assert text == "hé\nx"
    with pytest.raises(TransientError, match="is the Slurm client installed"):
        list(stream_command(["/nonexistent/squeue"], 5))
    with pytest.raises(PermanentError):
        list(stream_command(["sh", "-c", "echo out; echo 'Access denied' >&2; exit 1"], 5))
    with pytest.raises(TransientError, match="did not answer within"):
        list(stream_command(["sleep", "5"], 0.1))
    # Stopping early ends the command (a caller that found its job reads no further).
    chunks = stream_command(["sh", "-c", "echo first; exec sleep 30"], 60)
    assert next(chunks) == "first\n"
    chunks.close()


def test_default_output_and_array_patterns() -> None:
    job = parse_squeue_json(_with_job(standard_output=""), 3)
    assert job is not None
    assert job.stdout == "/tmp/slurm-3.out"
    text = _with_job(array_job_id=2, array_task_id=5, standard_output="/r/%A_%a-%x-%u-%N.o")
    job = parse_squeue_json(text, 3)
    assert job is not None
    assert job.stdout.startswith("/r/2_5-x UserId=root(0)")
    assert job.stdout.endswith("-alice-vm.o")
    assert (job.array_job_id, job.array_task_id) == (2, 5)


def test_expand_output_pattern() -> None:
    got = expand_output_pattern("/r/%j-%u-%x-%%.out", job_id=7, user="bob", name="n")
    assert got == "/r/7-bob-n-%.out"


def test_notes_keep_the_acceptance_mark_and_never_add_it() -> None:
    assert admin_note(ACCEPTED_MARK, "pod=a") == f"{ACCEPTED_MARK}; pod=a"
    assert admin_note(f"{ACCEPTED_MARK}; pod=a", "pod=b") == f"{ACCEPTED_MARK}; pod=b"
    assert admin_note("", "pod=a") == "pod=a"
    assert admin_note("pod=x", f"{ACCEPTED_MARK}") == ACCEPTED_MARK  # the note's own text


def test_note_updates_only_on_change() -> None:
    ctl, calls = fake({"scontrol": ""})
    job = parse_squeue_json(_with_job(admin_comment=f"{ACCEPTED_MARK}; pod=a"), 3)
    assert job is not None
    ctl.note(job, "pod=a")
    assert calls == []
    ctl.note(job, "pod=b")
    assert calls == [["scontrol", "update", "JobId=3", f"AdminComment={ACCEPTED_MARK}; pod=b"]]


def test_unknown_job_is_none_not_finished() -> None:
    ctl, _ = fake({"scontrol": SlurmJobUnknown("Invalid job id specified")})
    assert ctl.show_job(42) is None


def test_sacct_allocation_line() -> None:
    text = (
        "41|COMPLETED|0:0|a|b|n|t|u\n42|CANCELLED by 2001|0:15|s|e|node1|cpu=1,gres/gpu=1|alice\n"
    )
    record = parse_sacct(text, 42)
    assert record is not None
    assert record.base_state == "CANCELLED"
    assert record.exit_code == "0:15"
    assert parse_sacct(text, 43) is None


def test_update_passes_values_as_single_words() -> None:
    ctl, calls = fake({"scontrol": ""})
    ctl.update_job(42, Comment="slurmk8s-key=abc; reason=OOMKilled")
    assert calls == [
        ["scontrol", "update", "JobId=42", "Comment=slurmk8s-key=abc; reason=OOMKilled"]
    ]


def test_gpu_counts() -> None:
    assert gpu_count("cpu=1,mem=1G,gres/gpu=2") == 2
    assert gpu_count("cpu=1") == 0
    assert gres_gpu_count("gres:gpu:2") == 2
    assert gres_gpu_count("gres/gpu:tesla:4") == 4
    assert gres_gpu_count("N/A") == 0


def test_running_gpu_jobs() -> None:
    ctl, _ = fake({"squeue": "12|gres:gpu:2|node1\n13|gres:gpu:2|node1\n14|N/A|node1\n"})
    assert ctl.running_gpu_jobs() == [(12, 2), (13, 2)]


def test_command_errors_are_translated() -> None:
    # A missing client is an operator's fix: users' work waits (retries), it does not fail.
    with pytest.raises(TransientError, match="is the Slurm client installed"):
        run_command(["/nonexistent/scontrol"], 5)
    with pytest.raises(TransientError, match="is the Slurm client installed"):
        exec_command(["/nonexistent/sbatch"], 5)
    with pytest.raises(PermanentError):
        run_command(["sh", "-c", "echo 'Access/permission denied' >&2; exit 1"], 5)
    with pytest.raises(SlurmJobUnknown):
        run_command(
            ["sh", "-c", "echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1"], 5
        )
    with pytest.raises(TransientError):
        run_command(["sh", "-c", "echo 'Unable to contact slurm controller' >&2; exit 1"], 5)
    with pytest.raises(TransientError):
        run_command(["sleep", "5"], 0.1)


# `squeue --jobs=<id> --states=all --noheader --Format=<STATUS_FIELDS, each ending in U+001F>`,
# captured on the lab (Slurm 22.05.8): a held job with an output pattern, a running one with a
# time limit, a finished one.
HELD = (
    "10113\x1f10113\x1fN/A\x1fPENDING\x1fJobHeldUser\x1f0\x1falice\x1f2001\x1f2001\x1fn/a\x1f"
    "\x1fcpu=1,mem=512M,node=1,billing=1\x1fplain\x1f(null)\x1f(null)\x1f"
    "/tmp/%x-%j-%u-%A-%a.out\x1fgpu\x1f1\x1f/tmp\x1fUNLIMITED\x1f2026-12-03T07:32:28\x1fN/A\x1f"
    "N/A\x1f\n"
)
RUNNING = (
    "10126\x1f10126\x1fN/A\x1fRUNNING\x1fNone\x1f0\x1falice\x1f2001\x1f2001\x1fvm\x1fvm\x1f"
    "cpu=2,mem=300M,node=1,billing=2,gres/gpu=1\x1frun\x1f(null)\x1f(null)\x1f"
    "/mnt/test-k8s/home/alice/slurm-10126.out\x1fgpu\x1f2\x1f/mnt/test-k8s/home/alice\x1f"
    "1-02:03:00\x1f2026-12-03T07:32:28\x1f2026-12-03T07:32:28\x1f2026-12-04T09:35:28\x1f\n"
)
DONE = (
    "10118\x1f10118\x1fN/A\x1fCOMPLETED\x1fNone\x1f0\x1falice\x1f2001\x1f2001\x1fvm\x1fvm\x1f"
    "cpu=1,mem=512M,node=1,billing=1,gres/gpu=1\x1frun\x1f(null)\x1f"
    "slurmk8s-accepted; pod=slurm-jobs/job-10118-r0 phase=Succeeded\x1f"
    "/mnt/test-k8s/home/alice/slurm-10118.out\x1fgpu\x1f1\x1f/mnt/test-k8s/home/alice\x1f"
    "UNLIMITED\x1f2026-12-02T11:58:40\x1f2026-12-02T11:58:41\x1f2026-12-02T11:58:43\x1f\n"
)


def _epoch(text: str) -> int:
    """squeue prints local time: the epoch seconds of ``text`` in this process's zone."""
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp())


def test_one_jobs_own_query_is_read_field_by_field() -> None:
    held = parse_job_status(HELD, 10113)
    assert held is not None
    assert (held.state, held.reason, held.restarts, held.node) == ("PENDING", "JobHeldUser", 0, "")
    assert (held.user, held.uid, held.gid, held.comment) == ("alice", 2001, 2001, "")
    assert (held.name, held.partition, held.cpus, held.mem_mb) == ("plain", "gpu", 1, 512)
    assert (held.work_dir, held.time_limit_s, held.start, held.end) == ("/tmp", None, "", "")
    assert held.submit_time == _epoch("2026-12-03T07:32:28")
    assert held.admin_comment == ""
    assert held.stdout == "/tmp/plain-10113-alice-10113-4294967294.out"
    assert (held.array_job_id, held.array_task_id) == (None, None)
    running = parse_job_status(RUNNING, 10126)
    assert running is not None
    assert (running.cpus, running.mem_mb, running.gpus) == (2, 300, 1)
    assert running.time_limit_s == ((24 + 2) * 60 + 3) * 60
    assert running.work_dir == "/mnt/test-k8s/home/alice"
    start = datetime.fromtimestamp(_epoch("2026-12-03T07:32:28"), UTC)
    assert running.start == start.strftime("%Y-%m-%dT%H:%M:%S")
    done = parse_job_status(DONE, 10118)
    assert done is not None
    assert (done.state, done.reason, done.node, done.gpus) == ("COMPLETED", "", "vm", 1)
    assert done.stdout == "/mnt/test-k8s/home/alice/slurm-10118.out"
    assert done.admin_comment == "slurmk8s-accepted; pod=slurm-jobs/job-10118-r0 phase=Succeeded"


@pytest.mark.parametrize(
    ("ids", "job_id", "array"),
    [
        ("10113\x1f10113\x1fN/A", 10113, (None, None)),
        ("10113\x1f10113\x1f1-2", 10113, (10113, None)),
        ("10114\x1f10113\x1f1", 10114, (10113, 1)),
    ],
)
def test_array_ids_read_as_the_listing_gives_them(
    ids: str, job_id: int, array: tuple[int | None, int | None]
) -> None:
    status = parse_job_status(HELD.replace("10113\x1f10113\x1fN/A", ids, 1), job_id)
    assert status is not None
    assert (status.array_job_id, status.array_task_id) == array


@pytest.mark.parametrize(
    ("limit", "seconds"),
    [("UNLIMITED", None), ("5:00", 300), ("1:00:00", 3600), ("2-00:00:00", 172800)],
)
def test_a_time_limit_reads_in_each_of_squeues_forms(limit: str, seconds: int | None) -> None:
    status = parse_job_status(HELD.replace("UNLIMITED", limit), 10113)
    assert status is not None
    assert status.time_limit_s == seconds


@pytest.mark.parametrize("field", ["plain", "(null)", "/tmp/%x-%j-%u-%A-%a.out"])
def test_a_separator_in_a_field_users_write_is_never_read_as_a_field(field: str) -> None:
    # The user's own string carries separators and a forged owner: the count gives it away.
    forged = HELD.replace(f"\x1f{field}\x1f", f"\x1f{field}\x1f0\x1f0\x1froot\x1f", 1)
    assert forged != HELD
    assert parse_job_status(forged, 10113) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        HELD + HELD,
        HELD.replace("10113", "10114", 1),
        HELD[:-1],
        HELD.replace("\x1f0\x1f", "\x1fx\x1f"),
        HELD.replace("UNLIMITED", "INVALID"),
        HELD.replace("2026-12-03T07:32:28", "Unknown"),
        HELD.replace("\x1fgpu\x1f1\x1f", "\x1fgpu\x1fN/A\x1f"),
    ],
)
def test_anything_but_exactly_this_jobs_record_is_not_read(text: str) -> None:
    assert parse_job_status(text, 10113) is None


def test_a_record_not_read_exactly_is_answered_by_the_structured_listing() -> None:
    forged = HELD.replace("\x1fplain\x1f", "\x1fx\x1f0\x1f0\x1f", 1)
    calls: list[list[str]] = []

    def runner(argv: Sequence[str], timeout_s: float) -> str:
        calls.append(list(argv))
        return forged if "--noheader" in argv else SQUEUE

    status = SlurmCtl(runner).job_status(3)
    assert status == JobStatus.of(parse_squeue_json(SQUEUE, 3))  # type: ignore[arg-type]
    assert [c[1] for c in calls] == ["--jobs=3", "--json"]
    assert SlurmCtl(lambda argv, t: DONE).job_status(10118) == parse_job_status(DONE, 10118)


def test_a_job_slurmctld_forgot_has_no_status() -> None:
    def runner(argv: Sequence[str], timeout_s: float) -> str:
        raise SlurmJobUnknown("squeue: slurm_load_jobs error: Invalid job id specified")

    assert SlurmCtl(runner).job_status(7) is None
