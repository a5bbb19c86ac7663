#!/usr/bin/env python3
"""A small analysis a job runs from /mnt/test-k8s/scripts/ (examples/python-job.sh)."""

import os
import platform
import statistics
from pathlib import Path

data = [3.1, 4.1, 5.9, 2.6, 5.3, 5.8]
print(f"python {platform.python_version()} in {Path.cwd()}")
print(f"mean={statistics.mean(data):.3f} stdev={statistics.stdev(data):.3f}")
Path("/results/summary.txt").write_text(
    f"job {os.environ.get('SLURM_JOB_ID')}: mean {statistics.mean(data):.3f}\n"
)
print("wrote /results/summary.txt")
