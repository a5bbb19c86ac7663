"""Slurm's Prolog/Epilog side of the execution path: job events that survive a broker outage.

slurmd runs ``slurm/hook`` (installed as the prolog and as the epilog) as root on the node.
When the node's relay (``relay``, a resident ``python -m services.hooks relay``) watches the
outbox, the script only writes slurmd's environment into it, durably, and exits in a few
milliseconds; the relay makes ``job.started``/``job.ended`` of it and publishes it at once.
Without a relay the script runs ``python -m services.hooks prolog|epilog``: the hook builds the
event, writes it atomically into the root-only outbox and tries once, briefly, to publish
everything there. Whatever could not be published stays on disk and is delivered by the relay,
the next hook run or a detached flusher. The hooks never call a Slurm command and always exit
0 for their own reasons, because a failing prolog drains the node.

The hook's imports are kept to the standard library (and pika, only when it publishes): every
import is paid on a job's start and end when no relay runs.
"""
