"""The confluent source's protocol choice and slot identity (consumers.group_protocol)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.config import WorkerConfig
from consumers.group_protocol import (
    CLASSIC,
    CONSUMER,
    CONSUMER_GROUP_HEARTBEAT,
    describe,
    instance_id,
    protocol_for,
)
from consumers.source_choice import kafka_source

KAFKA_4 = {0: (0, 11), 11: (0, 9), CONSUMER_GROUP_HEARTBEAT: (0, 1), 69: (0, 1)}
TANSU = {0: (0, 11), 11: (0, 9), 69: (0, 0)}  # no ConsumerGroupHeartbeat


def test_kip_848_where_the_broker_lists_its_heartbeat_and_classic_where_it_does_not() -> None:
    assert protocol_for(KAFKA_4) == CONSUMER
    assert protocol_for(TANSU) == CLASSIC
    assert protocol_for(KAFKA_4, "classic") == CLASSIC  # CONSUMER_GROUP_PROTOCOL=classic
    assert protocol_for(TANSU, "consumer") == CONSUMER  # the refusal then falls back
    assert "cooperative-sticky" in describe(CLASSIC) and "KIP-848" in describe(CONSUMER)


def test_a_slot_has_the_same_id_every_time_and_slots_differ() -> None:
    assert instance_id("orders", 0, host="web-1") == instance_id("orders", 0, host="web-1")
    assert instance_id("orders", 0, host="web-1") == "orders-web-1-0"
    assert instance_id("orders", 0, host="web-1") != instance_id("orders", 1, host="web-1")
    assert instance_id("orders", 0, host="web-1") != instance_id("orders", 0, host="web-2")


@given(st.text(max_size=300), st.integers(0, 63), st.text(max_size=300))
def test_any_group_and_host_make_a_valid_instance_id(group: str, slot: int, host: str) -> None:
    made = instance_id(group, slot, host=host)
    assert re.fullmatch(r"[a-zA-Z0-9._-]{1,249}", made)
    assert made.endswith(f"-{slot}")  # the slot survives any truncation


def test_an_unknown_client_is_refused_by_name() -> None:
    config = WorkerConfig(bootstrap_servers="127.0.0.1:1", shards=1, kafka_client="java")
    with pytest.raises(ValueError, match="java"):
        kafka_source(config, "g")
