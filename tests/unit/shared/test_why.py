import os
from pathlib import Path

import pytest

from shared.why import refusals

pytestmark = pytest.mark.unit


def test_refusals_of_a_name_and_its_numbered_copies_newest_first(tmp_path: Path) -> None:
    for n, name in enumerate(["job.sh.error", "job.1.sh.error", "job.sh2.error", "other.error"]):
        (tmp_path / name).write_text(f"{name}\n")
        os.utime(tmp_path / name, (n, n))
    found = refusals(tmp_path, "job.sh")
    assert [p.name for p, _ in found] == ["job.1.sh.error", "job.sh.error"]
    assert found[0][1] == "job.1.sh.error\n"


@pytest.mark.parametrize("name", ["", ".", "..", "../etc/passwd", "a/b"])
def test_only_plain_names_are_looked_up(tmp_path: Path, name: str) -> None:
    assert refusals(tmp_path, name) == []


def test_a_name_with_regex_characters_matches_only_itself(tmp_path: Path) -> None:
    (tmp_path / "a+b.sh.error").write_text("x")
    (tmp_path / "aab.sh.error").write_text("y")
    assert [p.name for p, _ in refusals(tmp_path, "a+b.sh")] == ["a+b.sh.error"]
