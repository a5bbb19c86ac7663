"""The bench's own accounting: naming processes and splitting a burst's CPU among them."""

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit

RUN = Path(__file__).parents[3] / "bench" / "run.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", RUN)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stat(comm: str, flags: int = 0x400000) -> str:
    """A /proc/<pid>/stat line: pid, (comm), state, ppid, pgrp, session, tty, tpgid, flags…"""
    return f"42 ({comm}) S 1 42 42 0 -1 {flags} 0 0 0 0 7 3 0 0 20 0 1 0 12345 0 0"


def test_a_process_is_named_by_its_service_module(bench: ModuleType) -> None:
    line = _stat("python3")
    assert bench.process_name(line, b"/venv/bin/python\0-m\0services.validator\0") == "validator"
    assert bench.process_name(line, b"python\0-I\0-m\0services.hooks\0relay\0") == "hooks"
    assert bench.process_name(line, b"python\0-m\0pytest\0") == "python3"
    assert bench.process_name(line, b"python\0script.py\0-m\0") == "python3"


def test_a_command_name_with_parentheses_and_spaces_is_read_whole(bench: ModuleType) -> None:
    # The name is the process's own choice: the flags are still found after the last ")".
    assert bench.process_name(_stat("a) (b 1 2"), b"") == "a) (b 1 2"
    assert bench.process_name(_stat("x) y", flags=0x00200040), b"") == "kernel threads"


def test_rabbitmq_and_kernel_threads_are_named_as_such(bench: ModuleType) -> None:
    assert bench.process_name(_stat("beam.smp"), b"/usr/lib/erlang/erts/bin/beam.smp\0") == (
        "rabbitmq"
    )
    assert bench.process_name(_stat("kworker/u8:2", flags=0x04208060), b"") == "kernel threads"


def test_the_split_charges_each_kind_of_process_and_the_rest_to_the_short_lived(
    bench: ModuleType,
) -> None:
    before = {(10, 1): ("validator", 1.0), (11, 1): ("sbatch", 0.5), (12, 5): ("bash", 2.0)}
    after = {
        (10, 1): ("validator", 1.5),  # 0.5 spent
        (12, 9): ("bash", 0.1),  # pid 12 reused: a new process, all of it spent
        (13, 7): ("slurmctld", 0.2),  # new since: all of it
        (14, 7): ("idle", 0.0),
    }
    split = bench.cpu_by_process(before, after, busy_s=1.0)
    assert split == pytest.approx(
        {"validator": 0.5, bench.SHORT_LIVED: 0.2, "slurmctld": 0.2, "bash": 0.1}
    )
    assert next(iter(split)) == "validator"  # largest first


def test_the_split_rows_are_per_file_with_the_rest_and_the_total(bench: ModuleType) -> None:
    burst = {
        "files": 100,
        "cpu_by_process_s": {"validator": 0.8, "watcher": 0.3, "munged": 0.05},
        "raw_sbatch_cpu_by_process_s": {"slurmctld": 0.25, "munged": 0.05},
    }
    assert bench.cpu_split_rows(burst, shown=2) == [
        ("validator", "8.0", "0.0"),
        ("watcher", "3.0", "0.0"),
        ("everything else", "0.5", "3.0"),
        ("all (machine busy time)", "11.5", "3.0"),
    ]
    assert bench.cpu_split_rows({"files": 0}) == []
