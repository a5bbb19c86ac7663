"""The chaos run's short form (``tests/chaos.py``): 24 files, every fault once, then counted.

It SIGKILLs each service and restarts RabbitMQ, slurmctld and the API server, so it must run
alone on the lab (the lab lock); every daemon is brought back whatever happens. The full
form is ``make chaos`` (200 files).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.chaos import Chaos

pytestmark = pytest.mark.integration


def test_short_chaos_run_loses_doubles_and_strands_nothing(
    execution_services: Any, lab_env: dict[str, str], require: Any
) -> None:
    require("registry")
    chaos = Chaos(execution_services, lab_env, files=24, drain_s=420, say=print)
    try:
        failures = chaos.run()
    finally:
        # The session's other tests expect the launcher and the collector only.
        for name in ("watcher", "validator"):
            execution_services.stop(name)
    assert failures == [], "\n".join(failures)
