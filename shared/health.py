"""``python -m shared.health``: the container healthcheck shared by the four services.

A service is healthy when what it cannot work without answers: the broker (one AMQP
connection with the service's own credentials and vhost, no retries) and the NAS tree it
reads and writes. Exit status 0 healthy, 1 not (the reason on stderr); Docker, Kubernetes
probes and ``make up`` read only the status.
"""

from __future__ import annotations

import sys

from shared.broker.connection import close_quietly, connect
from shared.config import BrokerSettings, NasSettings
from shared.errors import BrokerUnavailable


def problems(broker: BrokerSettings, nas: NasSettings) -> list[str]:
    """What keeps a service from working, in words; empty when healthy."""
    found: list[str] = []
    if not nas.submit_dir.is_dir():
        found.append(f"NAS: {nas.submit_dir} is not a directory (is the NAS mounted?)")
    try:
        # One try: a probe that retried for minutes would hide the outage it exists to show.
        close_quietly(connect(broker.model_copy(update={"connect_attempts": 1})))
    except BrokerUnavailable as exc:
        found.append(f"broker: {exc}")
    return found


def main() -> int:
    """Print each problem; exit 0 when there is none."""
    found = problems(BrokerSettings(), NasSettings())
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
