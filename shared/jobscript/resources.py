"""Reading sbatch's resource values: sizes, counts, node ranges, GPU specs and array ranges.

Each reader raises ``ValueError`` with a short reason; ``validation`` turns it into a problem
on the directive's line. The forms follow ``sbatch(1)`` for Slurm 22.05.
"""

from __future__ import annotations

import re

_SIZE = re.compile(r"^([0-9]+)([KMGT]?)$", re.IGNORECASE)
_UNIT_MB = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


def size_mb(value: str) -> int:
    """A memory size in MB: ``500``, ``500M``, ``2G``, ``1T``, ``4096K`` (default unit M)."""
    match = _SIZE.match(value.strip())
    if match is None:
        raise ValueError(f"'{value}' is not a size (a number with an optional K, M, G or T)")
    number, unit = int(match[1]), match[2].upper()
    mb = number * _UNIT_MB[unit]
    return int(mb) if mb == int(mb) else int(mb) + 1


def count(value: str) -> int:
    """A positive whole number."""
    text = value.strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"'{value}' is not a positive whole number")
    return int(text)


def node_range(value: str) -> tuple[int, int]:
    """``--nodes`` as (min, max): ``1``, ``2-4``."""
    low, dash, high = value.strip().partition("-")
    first = count(low)
    last = count(high) if dash else first
    if last < first:
        raise ValueError(f"'{value}' is not a node range (min-max)")
    return first, last


def gpu_spec(value: str) -> int:
    """GPUs in ``--gpus``-style specs: ``2``, ``a100:2``, ``a100:1,v100:2`` (summed)."""
    total = 0
    for part in value.split(","):
        fields = part.strip().split(":")
        if len(fields) > 2 or not fields[-1]:
            raise ValueError(f"'{value}' is not a GPU count ([type:]count)")
        total += count(fields[-1])
    return total


def gres_gpus(value: str) -> int:
    """GPUs in a ``--gres`` list: ``gpu``, ``gpu:2``, ``gpu:a100:2``, ``gres/gpu:2``; others 0."""
    total = 0
    for part in value.split(","):
        fields = part.strip().removeprefix("gres/").removeprefix("gres:").split(":")
        if fields[0] != "gpu":
            continue
        if len(fields) == 1:
            total += 1
        elif len(fields) == 2:
            # "gpu:a100" names a type and means one; "gpu:2" is a count.
            total += count(fields[1]) if fields[1].isdigit() else 1
        elif len(fields) == 3:
            total += count(fields[2])
        else:
            raise ValueError(f"'{part}' is not a GRES spec (gpu[:type][:count])")
    return total


_ARRAY_PART = re.compile(r"^([0-9]+)(?:-([0-9]+)(?::([0-9]+))?)?$")


def array_tasks(value: str) -> int:
    """How many tasks an ``--array`` spec makes: ``0-99%4``, ``1,3,5``, ``1-100:2``."""
    spec, _, limit = value.strip().partition("%")
    if limit and not limit.isdigit():
        raise ValueError(f"'{value}': the part after % must be a number")
    total = 0
    for part in spec.split(","):
        match = _ARRAY_PART.match(part.strip())
        if match is None:
            raise ValueError(f"'{value}' is not an array spec (e.g. 0-99%4, 1,3,5, 1-100:2)")
        first = int(match[1])
        last = int(match[2]) if match[2] is not None else first
        step = int(match[3]) if match[3] is not None else 1
        if last < first or step < 1:
            raise ValueError(f"'{part}' is not an ascending range with a positive step")
        total += (last - first) // step + 1
    return total
