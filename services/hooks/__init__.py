"""Slurm's Prolog/Epilog side of the execution path: job events that survive a broker outage.

slurmd runs ``slurm/prolog`` and ``slurm/epilog`` as root on the node; both call
``python -m services.hooks prolog|epilog``. The hook builds ``job.started``/``job.ended`` from
the environment slurmd provides, writes it atomically into a root-only spool directory, and
tries once, briefly, to publish everything spooled. Whatever could not be published stays on
disk and is delivered by the next hook run or by a detached flusher. The hook never calls a
Slurm command and always exits 0 for its own reasons, because a failing prolog drains the node.

Imports are kept to the message models, pika and the standard library: every import is paid on
every job start and end.
"""
