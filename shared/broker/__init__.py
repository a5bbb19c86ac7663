"""RabbitMQ transport: topology, confirmed publishing and the one consumer adapter.

This package is the only place that imports pika.
"""

from shared.broker.consumer import Consumer, Handler
from shared.broker.publisher import Publisher
from shared.broker.topology import ALL_QUEUES, COLLECTOR, LAUNCHER, VALIDATOR, QueueSpec

__all__ = [
    "ALL_QUEUES",
    "COLLECTOR",
    "LAUNCHER",
    "VALIDATOR",
    "Consumer",
    "Handler",
    "Publisher",
    "QueueSpec",
]
