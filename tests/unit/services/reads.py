"""Counting what a service reads from a file, for the NAS door's bounded-read tests."""

from __future__ import annotations

import os
from typing import Any

import pytest


class Counting:
    """A file object that counts the bytes read through it."""

    def __init__(self, handle: Any, counted: list[int]) -> None:
        self.handle, self.counted = handle, counted

    def __enter__(self) -> Counting:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.handle.close()

    def fileno(self) -> int:
        return int(self.handle.fileno())

    def read(self, n: int) -> bytes:
        data: bytes = self.handle.read(n)
        self.counted.append(len(data))
        return data


def count_reads(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[int]:
    counted: list[int] = []
    real_fdopen = os.fdopen
    monkeypatch.setattr(
        module.os, "fdopen", lambda fd, *a, **k: Counting(real_fdopen(fd, *a, **k), counted)
    )
    return counted
