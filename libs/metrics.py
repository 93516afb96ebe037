"""The process's Prometheus metrics: one registry per process, served on GET /metrics.

Every name starts with `shop_`; labels are small fixed sets (a durable, a reason, a status),
never an order, a customer or a payment. What every service has (its consumers) is defined
here; a service's own metrics are defined in its shell, where it decides, on this registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "REGISTRY", "Counter", "Gauge", "Histogram", "exposition"]

REGISTRY = CollectorRegistry()

# The runner's, in every service. Lag is per durable: replicas of a service share their
# durables and report the same figure (take the max across instances).
CONSUMER_PENDING = Gauge(
    "shop_consumer_pending",
    "Messages on the stream the durable has not been given yet (its lag)",
    ["stream", "durable"],
    registry=REGISTRY,
)
CONSUMER_ACK_PENDING = Gauge(
    "shop_consumer_ack_pending",
    "Messages given to the durable and not acked yet",
    ["stream", "durable"],
    registry=REGISTRY,
)
CONSUMER_LAST_FETCH = Gauge(
    "shop_consumer_last_fetch_timestamp_seconds",
    "When the durable last pulled from the bus without an error (Unix time)",
    ["durable"],
    registry=REGISTRY,
)
DELIVERIES_RETRIED = Counter(
    "shop_deliveries_retried",
    "Facts given back to be delivered again later (an outage or a failing handler)",
    ["durable", "why"],  # why: outage, failure
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "shop_dead_letters",
    "Facts set aside on DEADLETTER (undecodable, or failing after MAX_DELIVERIES)",
    ["stream"],
    registry=REGISTRY,
)


def exposition() -> bytes:
    """The registry in the Prometheus text format."""
    return generate_latest(REGISTRY)
