#!/usr/bin/env python3
"""Turns a root filesystem tarball into a single-layer OCI image layout.

No public registry is reachable from the lab, so base images are made from local root
filesystems; skopeo then copies the layout into the lab registry like any pushed image.
Usage: mkoci.py ROOTFS.tar OUT_DIR TAG [--cmd JSON] [--entrypoint JSON] [--env K=V ...]
                 [--label K=V ...]
"""

import argparse
import gzip
import hashlib
import json
import os
import shutil


def blob(out, data):
    """Store bytes as a content-addressed blob; return its descriptor fields."""
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(out, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


def main():
    """Turn a rootfs tarball into a one-layer OCI image layout."""
    ap = argparse.ArgumentParser()
    ap.add_argument("rootfs")
    ap.add_argument("out")
    ap.add_argument("tag")
    ap.add_argument("--cmd", default=None)
    ap.add_argument("--entrypoint", default=None)
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--label", action="append", default=[])
    a = ap.parse_args()

    shutil.rmtree(a.out, ignore_errors=True)
    os.makedirs(os.path.join(a.out, "blobs", "sha256"))
    with open(a.rootfs, "rb") as f:
        raw = f.read()
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    # mtime=0 keeps the compressed layer, and so the image digest, stable across rebuilds.
    layer_digest, layer_size = blob(a.out, gzip.compress(raw, compresslevel=6, mtime=0))

    cfg = {"Env": a.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
    if a.cmd:
        cfg["Cmd"] = json.loads(a.cmd)
    if a.entrypoint:
        cfg["Entrypoint"] = json.loads(a.entrypoint)
    if a.label:
        cfg["Labels"] = dict(item.split("=", 1) for item in a.label)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "slurm-k8s lab/images/mkoci.py"}],
    }
    cfg_digest, cfg_size = blob(a.out, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": cfg_digest,
            "size": cfg_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": layer_size,
            }
        ],
    }
    man_digest, man_size = blob(a.out, json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": man_digest,
                "size": man_size,
                "annotations": {"org.opencontainers.image.ref.name": a.tag},
            }
        ],
    }
    with open(os.path.join(a.out, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(a.out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)


if __name__ == "__main__":
    main()
