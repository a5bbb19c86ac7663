"""The run's Kubernetes objects as plain manifests (camelCase dicts), built without any I/O.

Everything a run needs is in ``RunSpec``; ``manifests`` turns it into the ServiceAccount, the
script ConfigMap, the Role/RoleBinding that let the batch step follow (and delete) only its
own Pod, and the Pod itself. The Pod passes the "restricted" Pod Security profile: non-root
uid/gid from Slurm, no privilege escalation, all capabilities dropped, RuntimeDefault seccomp,
and only configMap, emptyDir and PVC volumes.

Every Pod has a ``scratch`` emptyDir with a size limit (``LAUNCHER_SCRATCH_SIZE``) holding
``workspace/`` (mounted at ``/workspace``, the default working directory) and ``results/``
(``/results``); and the NAS's tools folder (a static bash and busybox, root's, checked by
``tools``) read-only at ``/slurm-k8s-tools``. The job's container
runs ``RUN_SHIM`` with that bash: it honours the script's ``#!`` line (bash semantics even on
images without bash), starts in ``#K8S_WORKDIR``, and at the end merges ``/results`` into
``<NAS>/results/<jobid>/``. There is no init container: one costs the kubelet about a second
per Pod before the job's container starts (``tools``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from shared.jobpods import (
    JOB_NAMESPACE,
    LABEL_SUBMITTED,
    LABEL_UID,
    NAS_CLAIM,
    run_labels,
    run_name,
)
from shared.podfacts import RESULTS_ANNOTATION, SCRIPT_ANNOTATION

Manifest = dict[str, Any]

GPU_RESOURCE = "nvidia.com/gpu"
SCRIPT_DIR = "/slurm-k8s"
SCRIPT_KEY = "script"
CONTAINER = "job"

TOOLS_DIR = "/slurm-k8s-tools"
"""Where the job's container finds the static bash and busybox (the NAS's tools folder)."""
WORKSPACE = "/workspace"
"""The default working directory: the run's own scratch."""
RESULTS = "/results"
"""The run's results folder; merged into ``<NAS>/results/<jobid>/`` when the program ends."""
SCRATCH = "scratch"
"""The emptyDir that holds workspace/ and results/ (one size limit for both; the kubelet makes
both subPath folders with the emptyDir's mode, 0777: the Pod has one uid)."""

# The job container's entry point, run by the static bash (so it works on any image, even one
# without /bin/sh). Arguments: TOOLS PROGRAM WORKDIR RESULTS DEST.
# 1. Enters WORKDIR as the user (created with mkdir -p as the user if missing: runc would
#    create a missing workingDir as root, anywhere on the NAS).
# 2. Runs PROGRAM with the interpreter its #! line names when the image has it (also
#    `#!/usr/bin/env X` through PATH); a missing bash is replaced by the static bash, a
#    missing sh/dash by that bash in POSIX mode, both said on stderr; any other missing
#    interpreter fails at once (exit 127) with the reason. A program without #! (only a
#    #K8S_SCRIPT can be one) runs by its name: .py with python3/python, .sh with bash.
# 3. Forwards SIGTERM (Slurm's cancel or time limit) to the program and waits for it.
# 4. Merges RESULTS into DEST (<NAS>/results/<jobid>, checked to be the user's own, not a
#    symlink): files the job already copied there are kept; exits with the program's code.
RUN_SHIM = r"""T=$1 program=$2 workdir=$3 results=$4 dest=$5
say() { printf 'slurm-k8s: %s\n' "$*" >&2; }
if [ ! -d "$workdir" ]; then
  "$T/busybox" mkdir -p -- "$workdir" 2>/dev/null
fi
cd -- "$workdir" 2>/dev/null || {
  say "cannot start in the working directory $workdir (#K8S_WORKDIR):" \
    "it does not exist and cannot be created, or you may not enter it"
  exit 1
}
if [ ! -f "$program" ] || [ ! -r "$program" ]; then
  say "cannot read $program: it is not a file you may read"
  exit 127
fi
case $program in
/slurm-k8s/*) shown="the job script" ;;
*) shown=$program ;;
esac
cmd=()
first=
IFS= read -r first < "$program"
case $first in
'#!'*)
  read -r -a words <<< "${first#??}"
  interp=${words[0]:-}; rest=("${words[@]:1}")
  base=${interp##*/}
  if [ "$base" = env ] && [ ${#rest[@]} -gt 0 ]; then
    name=${rest[0]}
    if [ -x "$interp" ] && command -v -- "$name" >/dev/null 2>&1; then
      cmd=("$interp" "${rest[@]}" "$program")
    else
      interp=$name; base=${name##*/}; rest=("${rest[@]:1}")
    fi
  elif [ -n "$interp" ] && [ -x "$interp" ]; then
    cmd=("$interp" "${rest[@]}" "$program")
  fi
  if [ ${#cmd[@]} -eq 0 ]; then
    case $base in
    bash) say "$interp is not in the image;" \
            "running it with the bash slurm-k8s provides (${BASH_VERSION%%(*})"
          cmd=("$T/bash" "${rest[@]}" "$program") ;;
    sh|dash) say "$interp is not in the image; running it with slurm-k8s's bash in POSIX mode"
          cmd=("$T/bash" --posix "${rest[@]}" "$program") ;;
    esac
  fi ;;
*)
  case $program in
  *.py) for p in python3 python; do
          if command -v "$p" >/dev/null 2>&1; then cmd=("$p" "$program"); break; fi
        done
        interp=python3 ;;
  *.sh) if [ -x /bin/bash ]; then cmd=(/bin/bash "$program"); else cmd=("$T/bash" "$program"); fi ;;
  *) say "$program has no #! line naming its interpreter," \
       "and its name ends neither in .py nor in .sh"
     exit 127 ;;
  esac ;;
esac
if [ ${#cmd[@]} -eq 0 ]; then
  say "the interpreter ${interp:-named by the #! line} is not in the image," \
    "so $shown cannot run as written; use an image that has it" \
    "(slurm-k8s itself provides only bash)"
  exit 127
fi
child= term=
trap 'term=1; [ -z "$child" ] || kill -TERM "$child" 2>/dev/null' TERM
# While the program runs the shim's own stderr is /dev/null: bash notes a child killed by a
# signal ("Killed") at whichever command comes after it reaped it, not only in `wait`.
exec 3>&2 2>/dev/null
"${cmd[@]}" 2>&3 3>&- &
child=$!
[ -z "$term" ] || kill -TERM "$child"
while :; do
  wait "$child"; rc=$?
  kill -0 "$child" || break
done
exec 2>&3 3>&-
trap - TERM
if [ -n "$("$T/busybox" ls -A "$results" 2>/dev/null)" ]; then
  if [ -d "$dest" ] && [ ! -L "$dest" ] && [ -O "$dest" ]; then
    # Merge: what the job already put in $dest (the seed's own `cp`) is kept as it is.
    failed=0
    shopt -s globstar dotglob nullglob
    for f in "$results"/**; do
      rel=${f#"$results"/}
      if [ -d "$f" ] && [ ! -L "$f" ]; then
        "$T/busybox" mkdir -p -- "$dest/$rel" || failed=1
      elif [ ! -e "$dest/$rel" ] && [ ! -L "$dest/$rel" ]; then
        "$T/busybox" cp -Pp -- "$f" "$dest/$rel" || failed=1
      fi
    done
    [ "$failed" = 0 ] ||
      say "copying $results to $dest failed in part: some results are missing there"
  else
    say "$dest is not your own directory: $results was not copied there"
  fi
fi
exit "$rc"
"""


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides a run's objects."""

    job_id: int
    restart_count: int
    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    """Supplementary groups of the user (``os.getgrouplist``), as on a Slurm node."""
    job_name: str
    partition: str
    slurm_node: str
    k8s_node: str
    cpus: int
    mem_mb: int
    gpus: int
    gpu_indices: str
    """SLURM_JOB_GPUS from the prolog, e.g. '0,1': Slurm's view of which GRES it assigned."""
    image: str
    """What the Pod runs: ``host/name@sha256:…`` once the launcher has pinned it."""
    script: bytes
    """The user's script exactly as submitted (any bytes, not only UTF-8)."""
    work_dir: str
    nas_root: str
    shm_mb: int
    time_limit_s: int | None
    home: str | None = None
    array_job_id: int | None = None
    array_task_id: int | None = None
    submit_time: int = 0
    requested_image: str = ""
    """``#K8S_IMAGE`` as the user wrote it (kept on the Pod as an annotation)."""
    image_pull_policy: str = "Always"
    termination_grace_s: int = 20
    deadline_margin_s: int = 300
    extra_env: tuple[tuple[str, str], ...] = field(default=())
    tools_dir: str = "slurm-jobs/.tools"
    """The tools folder inside the NAS volume (``tools.check_tools`` checked it)."""
    start_dir: str = WORKSPACE
    """Where the program starts: ``#K8S_WORKDIR``, else the script's ``--chdir``, else
    ``/workspace``."""
    k8s_script: str = ""
    """``#K8S_SCRIPT`` as validated ("" when the job names none)."""
    run_k8s_script: bool = False
    """The job body has no command, so the container runs ``#K8S_SCRIPT`` itself."""
    scratch_size: str = "10Gi"
    """The size limit of the run's scratch emptyDir (/workspace and /results together)."""

    @property
    def name(self) -> str:
        """``job-<id>-r<restart>``: the name of every object of the run."""
        return run_name(self.job_id, self.restart_count)

    @property
    def results_dir(self) -> str:
        """``<NAS>/results/<jobid>``: where the run's results land (made by the launcher)."""
        return f"{self.nas_root.rstrip('/')}/results/{self.job_id}"

    @property
    def labels(self) -> dict[str, str]:
        """Labels linking each object to its job, run, user and uid.

        An existing object is adopted only if it carries all of them (``KubeRuns``).
        """
        return {
            **run_labels(self.job_id, self.restart_count, self.user),
            LABEL_UID: str(self.uid),
            LABEL_SUBMITTED: str(self.submit_time),
        }


def _meta(spec: RunSpec, owner: Manifest | None) -> Manifest:
    meta: Manifest = {"name": spec.name, "namespace": JOB_NAMESPACE, "labels": spec.labels}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return meta


def owner_reference(name: str, uid: str) -> Manifest:
    """An ownerReference to the run's ServiceAccount: deleting it deletes the rest."""
    return {"apiVersion": "v1", "kind": "ServiceAccount", "name": name, "uid": uid}


def service_account(spec: RunSpec) -> Manifest:
    """The run's identity; its token is never mounted into the Pod (only the runner gets one)."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(spec, None),
        "automountServiceAccountToken": False,
    }


def config_map(spec: RunSpec, owner: Manifest) -> Manifest:
    """The user's original script, byte for byte (``binaryData``: not every script is UTF-8).

    ConfigMaps hold up to 1 MiB; the policy caps scripts lower.
    """
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(spec, owner),
        "binaryData": {SCRIPT_KEY: base64.b64encode(spec.script).decode("ascii")},
        "immutable": True,
    }


def role(spec: RunSpec, owner: Manifest) -> Manifest:
    """Read, follow and delete this one Pod, read its log; nothing else."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(spec, owner),
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["pods"],
                "resourceNames": [spec.name],
                "verbs": ["get", "watch", "list", "delete"],
            },
            {
                "apiGroups": [""],
                "resources": ["pods/log"],
                "resourceNames": [spec.name],
                "verbs": ["get"],
            },
        ],
    }


def role_binding(spec: RunSpec, owner: Manifest) -> Manifest:
    """Grants the run's Role to the run's ServiceAccount."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(spec, owner),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": spec.name},
        "subjects": [
            {"kind": "ServiceAccount", "name": spec.name, "namespace": JOB_NAMESPACE},
        ],
    }


def job_env(spec: RunSpec) -> list[dict[str, str]]:
    """The SLURM_* variables a batch script may read, with the values of this allocation.

    GPUs: SLURM_JOB_GPUS carries Slurm's GRES indices for the record, but inside the Pod the
    device plugin decides which devices are visible (and sets the runtime's own variables), so
    CUDA_VISIBLE_DEVICES is deliberately not set: CUDA numbers visible devices from 0.
    """
    cpus, mem = str(spec.cpus), str(spec.mem_mb)
    env = {
        "SLURM_JOB_ID": str(spec.job_id),
        "SLURM_JOBID": str(spec.job_id),
        "SLURM_JOB_NAME": spec.job_name,
        "SLURM_JOB_USER": spec.user,
        "SLURM_JOB_UID": str(spec.uid),
        "SLURM_JOB_GID": str(spec.gid),
        "SLURM_CPUS_ON_NODE": cpus,
        "SLURM_JOB_CPUS_PER_NODE": cpus,
        "SLURM_MEM_PER_NODE": mem,
        "SLURM_JOB_NODELIST": spec.slurm_node,
        "SLURM_NODELIST": spec.slurm_node,
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NNODES": "1",
        "SLURMD_NODENAME": spec.slurm_node,
        "SLURM_NODENAME": spec.slurm_node,
        "SLURM_JOB_PARTITION": spec.partition,
        "SLURM_SUBMIT_DIR": spec.work_dir,
        "SLURM_RESTART_COUNT": str(spec.restart_count),
        "USER": spec.user,
        "LOGNAME": spec.user,
        "HOME": spec.home or spec.work_dir,
        "SLURM_K8S_WORKDIR": spec.start_dir,
        "SLURM_K8S_RESULTS": spec.results_dir,
    }
    if spec.k8s_script:
        env["SLURM_K8S_SCRIPT"] = spec.k8s_script
    if spec.gpus:
        env["SLURM_JOB_GPUS"] = spec.gpu_indices
        env["SLURM_GPUS_ON_NODE"] = str(spec.gpus)
    if spec.array_job_id is not None and spec.array_task_id is not None:
        env["SLURM_ARRAY_JOB_ID"] = str(spec.array_job_id)
        env["SLURM_ARRAY_TASK_ID"] = str(spec.array_task_id)
    env.update(dict(spec.extra_env))
    return [{"name": key, "value": value} for key, value in env.items()]


def resources(spec: RunSpec) -> Manifest:
    """Requests == limits == the Slurm allocation (Guaranteed QoS; kubelet admission checks)."""
    amounts: dict[str, str] = {"cpu": str(spec.cpus), "memory": f"{spec.mem_mb}Mi"}
    if spec.gpus:
        amounts[GPU_RESOURCE] = str(spec.gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


IMAGE_ANNOTATION = "slurm-k8s.io/requested-image"


def _restricted_context() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def program(spec: RunSpec) -> str:
    """What the container runs: the job's script, or ``#K8S_SCRIPT`` when the body is empty."""
    return (
        spec.k8s_script if spec.run_k8s_script and spec.k8s_script else f"{SCRIPT_DIR}/{SCRIPT_KEY}"
    )


def pod(spec: RunSpec, owner: Manifest) -> Manifest:
    """The Pod that runs the user's script, pinned to the node Slurm chose."""
    pod_spec: Manifest = {
        # Slurm already placed the job: bypass the scheduler; kubelet admission still checks
        # that the node really has the CPUs, memory and GPUs.
        "nodeName": spec.k8s_node,
        "restartPolicy": "Never",
        "serviceAccountName": spec.name,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": spec.termination_grace_s,
        "securityContext": {
            "runAsUser": spec.uid,
            "runAsGroup": spec.gid,
            "runAsNonRoot": True,
            "supplementalGroups": sorted(set(spec.groups) - {spec.gid}) or None,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": CONTAINER,
                "image": spec.image,
                "imagePullPolicy": spec.image_pull_policy,
                "command": [f"{TOOLS_DIR}/bash", "-c", RUN_SHIM, "slurm-k8s-job"],
                "args": [TOOLS_DIR, program(spec), spec.start_dir, RESULTS, spec.results_dir],
                "workingDir": WORKSPACE,
                "env": job_env(spec),
                "resources": resources(spec),
                "securityContext": _restricted_context(),
                "volumeMounts": [
                    {"name": "nas", "mountPath": spec.nas_root},
                    {"name": "script", "mountPath": SCRIPT_DIR, "readOnly": True},
                    {"name": "shm", "mountPath": "/dev/shm"},
                    {"name": SCRATCH, "mountPath": WORKSPACE, "subPath": "workspace"},
                    {"name": SCRATCH, "mountPath": RESULTS, "subPath": "results"},
                    {
                        "name": "nas",
                        "mountPath": TOOLS_DIR,
                        "subPath": spec.tools_dir,
                        "readOnly": True,
                    },
                ],
                # The reason of a failure is in the Pod status, not only in the log.
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "volumes": [
            {"name": "nas", "persistentVolumeClaim": {"claimName": NAS_CLAIM}},
            {
                "name": "script",
                "configMap": {"name": spec.name, "defaultMode": 0o555},
            },
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{spec.shm_mb}Mi"}},
            {"name": SCRATCH, "emptyDir": {"sizeLimit": spec.scratch_size}},
        ],
    }
    if spec.time_limit_s is not None:
        pod_spec["activeDeadlineSeconds"] = spec.time_limit_s + spec.deadline_margin_s
    if pod_spec["securityContext"]["supplementalGroups"] is None:
        del pod_spec["securityContext"]["supplementalGroups"]
    meta = _meta(spec, owner)
    annotations = {RESULTS_ANNOTATION: spec.results_dir}
    if spec.requested_image:
        annotations[IMAGE_ANNOTATION] = spec.requested_image
    if spec.k8s_script:
        annotations[SCRIPT_ANNOTATION] = spec.k8s_script
    meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}
