"""The collector's Slurm boundary: slurmctld's structured record and accounting as ``SlurmJob``.

Commands and their errors are ``shared.slurmctl``'s; this adapter only decides which source
wins for each field: slurmctld while it knows the job (it has the restart count and the
comments, the output path), accounting for the final state once slurmctld has forgotten it.
Everything comes from squeue (one job's own query, checked field by field, or ``--json``) or
accounting, never from ``scontrol show job`` text, where a job name can forge any field.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from services.collector.handlers import SlurmJob
from shared.slurmctl import SlurmCtl, gpu_count


class SlurmAdapter:
    """``SlurmPort`` over Slurm's commands.

    Args:
        ctl: the command boundary.
    """

    def __init__(self, ctl: SlurmCtl) -> None:
        self._ctl = ctl

    def job(self, job_id: int) -> SlurmJob | None:
        """Both views merged; None when neither slurmctld nor accounting know the job.

        The two commands are asked at once (slurmctld and slurmdbd answer independently).
        slurmctld is asked about this job alone, its AdminComment included, so neither a
        finish nor a Pod's note lists the whole queue.
        """
        with ThreadPoolExecutor(1, thread_name_prefix="sacct") as pool:
            accounting = pool.submit(self._ctl.accounting, job_id)
            status = self._ctl.job_status(job_id)
            acct = accounting.result()
        if status is None and acct is None:
            return None
        if status is None:
            assert acct is not None
            return SlurmJob(
                job_id=job_id,
                acct_state=acct.base_state,
                exit_code=acct.exit_code,
                node=acct.node_list,
                start=acct.start,
                end=acct.end,
                user=acct.user,
                gpus=gpu_count(acct.alloc_tres),
            )
        return SlurmJob(
            job_id=job_id,
            ctld_state=status.state,
            acct_state=acct.base_state if acct else "",
            restarts=status.restarts,
            exit_code=acct.exit_code if acct else "",
            reason=status.reason,
            node=status.node,
            start=acct.start if acct else "",
            end=acct.end if acct else "",
            stdout=status.stdout,
            user=status.user,
            uid=status.uid,
            gid=status.gid,
            comment=status.comment,
            admin_comment=status.admin_comment,
            gpus=status.gpus or (gpu_count(acct.alloc_tres) if acct else 0),
        )

    def update(self, job_id: int, **fields: str) -> None:
        """``scontrol update`` (the collector runs as root or SlurmUser on the head node)."""
        self._ctl.update_job(job_id, **fields)
