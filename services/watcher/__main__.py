"""``python -m services.watcher``: watch the NAS submit folder and publish ``file.detected``.

Parses the settings and the policy (for ``max_script_bytes``) once, holds the watcher lock (a
second instance waits as a standby), runs until SIGTERM/SIGINT, then closes the broker
connection. Exit status 0 on a clean stop, 2 on a
configuration error.
"""

from __future__ import annotations

import sys

from services.watcher.config import WatcherSettings
from services.watcher.ledger import Ledger
from services.watcher.watching import Watcher
from shared.broker import Publisher
from shared.config import BrokerSettings, NasSettings
from shared.errors import ConfigError
from shared.jobscript import load_policy, policy_path
from shared.lifecycle import start_service
from shared.logs import get_logger

SERVICE = "watcher"


def main() -> int:
    """Run the watcher until stopped."""
    stop = start_service(SERVICE)
    log = get_logger(SERVICE)
    settings = WatcherSettings()
    nas = NasSettings()
    try:
        # The same file the validator reads: a file over its max_script_bytes is never read.
        policy = load_policy(policy_path())
    except ConfigError as exc:
        log.error("watcher.config_error", error=str(exc))
        return 2
    publisher = Publisher(BrokerSettings())
    try:
        ledger = Ledger(nas.state_dir / "watcher", settings.forget_after_s)
        with ledger.exclusive(stop) as held:
            if held:
                Watcher(
                    settings,
                    nas.submit_dir,
                    ledger,
                    publisher.publish,
                    max_script_bytes=policy.max_script_bytes,
                    keepalive=publisher.keepalive,
                ).run(stop)
    except ConfigError as exc:
        log.error("watcher.config_error", error=str(exc))
        return 2
    finally:
        publisher.close()
    log.info("watcher.stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
