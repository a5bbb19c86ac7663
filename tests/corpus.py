"""The hostile corpus (issue 9): its manifest, each case's bytes, and how a case is put in place.

``tests/data/corpus/manifest.json`` lists every case; ``tests/data/corpus/README.md`` explains
the fields. The unit passes (``tests/unit/shared/jobscript/test_corpus.py``,
``tests/unit/services/validator/test_corpus.py``) and the lab passes
(``tests/integration/submission/test_corpus_doors.py``) all read it through this module, so a
case is written once and every door is held to it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).parent / "data" / "corpus"
ACCOUNTS = {"alice": 2001, "bob": 2002, "root": 0, "daemon": 1}
"""The lab's users (lab/lib.sh) and the two system accounts some cases are owned by."""
CONTENT_KINDS = ("pad", "longline")
"""``make`` kinds that only build bytes: such a case is a job file like any other."""
CHANGES = ("rewrite", "grow", "remove", "replace-symlink")
"""Kinds that change after the watcher detected them (see :func:`change`)."""


@dataclass(frozen=True)
class Expect:
    """A verdict and a substring its reason must contain ("" when accepted)."""

    verdict: str
    reason: str = ""


@dataclass(frozen=True)
class Case:
    """One corpus case: what to drop, as whom, and what each door must answer."""

    id: str
    group: str
    file: str | None
    make: dict[str, Any] = field(default_factory=dict)
    drop_name: str | None = None
    owner: str = "alice"
    nas: Expect | None = None
    sbatch: Expect | None = None
    unit: Expect | None = None
    note: str = ""
    xfail: str = ""
    """Why this case does not get its answer yet (a known gap, tracked), or ""."""

    @property
    def kind(self) -> str:
        """What is dropped: ``file`` unless ``make`` says otherwise."""
        return str(self.make.get("kind", "file"))

    @property
    def is_job_file(self) -> bool:
        """A regular file whose bytes alone decide (no link, FIFO, owner or timing tricks)."""
        return self.kind == "file" or self.kind in CONTENT_KINDS

    @property
    def pure(self) -> Expect | None:
        """What ``check_script`` must say: ``unit``, else the NAS door's verdict in its words."""
        if self.unit is not None:
            return self.unit
        if not self.is_job_file or self.nas is None:
            return None
        verdict = "accepted" if self.nas.verdict == "submitted" else "refused"
        return Expect(verdict, self.nas.reason)

    def name(self, run: str) -> str:
        """The name it is dropped under (``{run}`` makes it unique per pass)."""
        pattern = self.drop_name or "{run}-" + self.id + ".sh"
        return pattern.replace("{run}", run)

    def content(self) -> bytes:
        """The bytes of the job file (or of the file before it changes)."""
        if self.kind in CONTENT_KINDS:
            base = str(self.make["base"]).encode()
            room = int(self.make["size"]) - len(base)
            if self.kind == "pad":
                return base + b"#" * (room - 1) + b"\n"
            return base + b"echo " + b"x" * (room - 6) + b"\n"
        if self.file is None:
            return b""
        return (CORPUS / self.file).read_bytes()


def _expect(raw: dict[str, str] | None) -> Expect | None:
    return None if raw is None else Expect(raw["verdict"], raw.get("reason", ""))


def load() -> list[Case]:
    """Every case of the manifest, in its order."""
    raw = json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))
    return [
        Case(
            id=c["id"],
            group=c["group"],
            file=c.get("file"),
            make=c.get("make", {}),
            drop_name=c.get("drop_name"),
            owner=c.get("owner", "alice"),
            nas=_expect(c.get("nas")),
            sbatch=_expect(c.get("sbatch")),
            unit=_expect(c.get("unit")),
            note=c.get("note", ""),
            xfail=c.get("xfail", ""),
        )
        for c in raw["cases"]
    ]


def lchown(path: Path, user: str) -> None:
    """Give ``path`` itself (a link is not followed) to ``user``'s uid and group."""
    uid = ACCOUNTS[user]
    os.lchown(path, uid, uid)


def build(case: Case, staging: Path, run: str) -> tuple[Path, str]:
    """Make the case's thing in ``staging``; return what to rename into submit/ and the path,
    relative to submit/, of the entry that must be answered.

    ``staging`` must be on the same filesystem as the submit folder (a hidden folder beside
    it): hard links need that, and a rename then puts the finished thing in at once, with its
    owner already set, as a careful copy tool would.
    """
    name = case.name(run)
    path = staging / name
    kind = case.kind
    if kind in ("file", *CONTENT_KINDS, "chown", *CHANGES):
        path.write_bytes(case.content())
        lchown(path, ACCOUNTS_BY_UID.get(int(case.make.get("uid", -1)), case.owner))
    elif kind == "sparse":
        with path.open("wb") as handle:
            handle.truncate(int(case.make["size"]))
        lchown(path, case.owner)
    elif kind == "symlink":
        path.symlink_to(_target(str(case.make["target"]), staging, run))
        lchown(path, case.owner)
    elif kind == "hardlink":
        os.link(_target(str(case.make["target"]), staging, run), path)
    elif kind == "fifo":
        os.mkfifo(path)
        lchown(path, case.owner)
    elif kind == "dir":
        path.mkdir()
        lchown(path, case.owner)
    elif kind in ("in-folder", "deep"):
        # A sub-folder of submit/ holding the script, or holding a folder that holds it.
        top = staging / f"{run}-{case.id}"
        inner = top / name if kind == "in-folder" else top / name / f"{run}-deeper.sh"
        inner.parent.mkdir(parents=True)
        inner.write_bytes(VALID)
        for p in (top, inner.parent, inner):
            lchown(p, case.owner)
        return top, f"{top.name}/{name}"
    else:
        raise ValueError(f"corpus case {case.id}: unknown kind {kind!r}")
    return path, name


ACCOUNTS_BY_UID = {uid: name for name, uid in ACCOUNTS.items()}
VALID = (CORPUS / "files" / "valid.sh").read_bytes()
"""The corpus's one valid job (held, so a lab pass never runs it)."""


def _target(spec: str, staging: Path, run: str) -> Path:
    """A link's target: ``bob-file``/``own-file`` are made in ``staging``; others are paths."""
    owners = {"bob-file": "bob", "own-file": "alice"}
    if spec not in owners:
        return Path(spec)
    target = staging / f".{run}-{spec}"
    if not target.exists():
        target.write_bytes(VALID)
        lchown(target, owners[spec])
    return target


def change(case: Case, path: Path) -> None:
    """What happens to a ``changes`` case after the watcher detected it."""
    kind = case.kind
    if kind == "rewrite":
        tmp = path.with_name(f".{path.name}.new")
        tmp.write_bytes(str(case.make["after"]).encode())
        lchown(tmp, case.owner)
        tmp.replace(path)
    elif kind == "grow":
        with path.open("r+b") as handle:
            handle.truncate(int(case.make["size"]))
    elif kind == "remove":
        path.unlink()
    elif kind == "replace-symlink":
        link = path.with_name(f".{path.name}.link")
        link.symlink_to(str(case.make["target"]))
        lchown(link, case.owner)
        link.replace(path)
    else:
        raise ValueError(f"corpus case {case.id}: {kind!r} does not change")
