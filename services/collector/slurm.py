"""The collector's Slurm boundary: slurmctld's record and accounting merged into ``SlurmJob``.

Commands and their errors are ``shared.slurmctl``'s; this adapter only decides which source
wins for each field: slurmctld while it knows the job (it has the restart count, the output
path and the comments), accounting for the final state once slurmctld has forgotten it.
"""

from __future__ import annotations

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
        """Both views merged; None when neither slurmctld nor accounting know the job."""
        record = self._ctl.show_job(job_id)
        acct = self._ctl.accounting(job_id)
        if record is None and acct is None:
            return None
        if record is None:
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
            ctld_state=record.state,
            acct_state=acct.base_state if acct else "",
            restarts=record.restarts,
            exit_code=(acct.exit_code if acct and acct.exit_code else record.get("ExitCode")),
            reason=record.reason,
            node=record.get("BatchHost") or record.get("NodeList"),
            start=record.get("StartTime"),
            end=record.get("EndTime"),
            stdout=record.stdout,
            user=record.user,
            uid=record.uid,
            gid=record.gid,
            comment=record.get("Comment"),
            admin_comment=record.get("AdminComment"),
            gpus=gpu_count(record.get("TRES") or (acct.alloc_tres if acct else "")),
        )

    def update(self, job_id: int, **fields: str) -> None:
        """``scontrol update`` (the collector runs as root or SlurmUser on the head node)."""
        self._ctl.update_job(job_id, **fields)
