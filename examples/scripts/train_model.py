#!/usr/bin/env python3
"""A stand-in for the seed's train_model.py: "trains" for a few epochs, writes its outputs.

Runs on the lab's pytorch:2.0-cuda11.8 stand-in (Python only): uses PyTorch and CUDA when the
image has them, says so when it does not.
"""

import argparse
import json
import os
import platform
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--output", default="/results")
args = parser.parse_args()

try:
    import torch  # type: ignore[import-not-found]

    device = "cuda" if torch.cuda.is_available() else "cpu"
except ImportError:
    device = "none (no PyTorch in this image)"
print(f"python {platform.python_version()}, device: {device}")

loss = 1.0
for epoch in range(1, args.epochs + 1):
    loss /= 2
    print(f"epoch {epoch}/{args.epochs} loss={loss:.4f}")

out = Path(args.output)
out.mkdir(parents=True, exist_ok=True)
(out / "model.txt").write_text(f"weights after {args.epochs} epochs\n")
metrics = {"epochs": args.epochs, "loss": loss, "job": os.environ.get("SLURM_JOB_ID")}
(out / "metrics.json").write_text(json.dumps(metrics) + "\n")
print(f"wrote {out}/model.txt and {out}/metrics.json")
