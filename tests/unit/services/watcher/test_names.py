"""A file name the watcher cannot put in a message must not stop the door (corpus: name-latin1)."""

import os
from pathlib import Path

import pytest

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


def test_a_name_that_is_not_utf8_is_logged_and_the_others_are_still_published(
    submit: Path, clock: Clock, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = os.path.join(os.fsencode(submit), b"caf\xe9.sh")
    with open(bad, "wb") as handle:
        handle.write(b"#!/bin/sh\necho hi\n")
    (submit / "good.sh").write_text("#!/bin/sh\necho hi\n")
    watcher = _watcher(submit, clock, broker)

    assert _settle(watcher, clock) == 1
    assert _settle(watcher, clock) == 0  # said once, not retried in a loop

    assert broker.paths == [str(submit / "good.sh")]
    said = capsys.readouterr().out
    assert "watcher.name_not_utf8" in said
    assert "caf\\xe9.sh" in said
