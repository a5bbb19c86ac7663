"""A file name the watcher cannot put in a message must not stop the door (corpus: name-latin1).

Such an entry is renamed where it is to the name messages show (``caf\\xe9.sh``) and then
offered like any other drop, so its owner gets an answer; nothing is replaced on the way.
"""

import os
from pathlib import Path

import pytest

from services.watcher.watching import rename_to_shown
from tests.unit.services.watcher.test_watching import (
    Broker,
    Clock,
    _settle,
    _watcher,
    broker,
    clock,
    submit,
)

pytestmark = pytest.mark.unit
__all__ = ["broker", "clock", "submit"]  # fixtures, imported for this module's tests

SHOWN = "caf\\xe9.sh"


def _drop(folder: Path, name: bytes, text: bytes = b"#!/bin/sh\necho hi\n") -> bytes:
    path = os.path.join(os.fsencode(folder), name)
    with open(path, "wb") as handle:
        handle.write(text)
    return path


def test_a_name_that_is_not_utf8_is_renamed_then_published_beside_the_others(
    submit: Path, clock: Clock, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    _drop(submit, b"caf\xe9.sh")
    (submit / "good.sh").write_text("#!/bin/sh\necho hi\n")
    watcher = _watcher(submit, clock, broker)

    assert _settle(watcher, clock) == 1
    assert "watcher.name_not_utf8" in capsys.readouterr().out
    assert sorted(os.listdir(submit)) == sorted(["good.sh", SHOWN])
    _settle(watcher, clock, events=True)

    assert sorted(broker.paths) == sorted([str(submit / "good.sh"), str(submit / SHOWN)])


def test_the_rename_never_replaces_an_existing_entry(submit: Path) -> None:
    (submit / SHOWN).write_text("someone else's\n")
    bad = _drop(submit, b"caf\xe9.sh", b"mine\n")

    renamed = rename_to_shown(submit, os.fsdecode(bad))

    assert renamed == str(submit / "caf\\xe9.1.sh")
    assert (submit / SHOWN).read_text() == "someone else's\n"
    assert Path(renamed).read_text() == "mine\n"
    assert not os.path.lexists(bad)


def test_a_sub_folder_whose_name_is_not_utf8_is_renamed_with_its_files(submit: Path) -> None:
    folder = os.path.join(os.fsencode(submit), b"d\xe9")
    os.mkdir(folder)
    inner = _drop(Path(os.fsdecode(folder)), b"job.sh")

    renamed = rename_to_shown(submit, os.fsdecode(inner))

    assert renamed == str(submit / "d\\xe9")
    assert (submit / "d\\xe9" / "job.sh").is_file()
