"""The (event, endpoint) pair count of the flapping test and the chaos run's webhook verdict
(tests/flapping_receiver.py): what counts as delivered, lost, a duplicate, another
webhook-id, a request after a disable."""

from __future__ import annotations

from outbound.deliveries import webhook_id_for
from tests.flapping_receiver import DISABLE_GRACE_S, Got, count_pairs

ENDPOINTS = {"/a": "ep_a", "/b": "ep_b"}


def _got(event: str, path: str, answer: str = "ok", *, at: float = 0.0, **kw: object) -> Got:
    webhook_id = str(kw.get("webhook_id", webhook_id_for(event, ENDPOINTS[path])))
    return Got(path, webhook_id, event, at, answer, bool(kw.get("verified", True)))


def test_every_pair_answered_200_once_or_more_is_delivered_and_copies_are_counted() -> None:
    got = [_got("e1", "/a", "500"), _got("e1", "/a"), _got("e1", "/a"), _got("e1", "/b")]
    count = count_pairs(got, {("e1", "/a"), ("e1", "/b")}, ENDPOINTS, {})
    assert (count.expected, count.delivered, count.duplicates) == (2, 2, 1)
    assert count.failures == []
    assert count.answers == {"500": 1, "ok": 3}


def test_a_pair_never_answered_200_is_lost_and_named() -> None:
    # A reset, and a slow 200 the sender had given up on: neither is a delivery.
    got = [_got("e1", "/a", "reset"), _got("e1", "/a", "slow"), _got("e2", "/a")]
    count = count_pairs(got, {("e1", "/a"), ("e2", "/a")}, ENDPOINTS, {})
    assert count.lost_count == 1 and count.lost == ["e1@ep_a"]
    assert count.failures == ["1 (event, endpoint) pairs lost, e.g. ['e1@ep_a']"]


def test_another_webhook_id_an_unsigned_request_and_a_late_one_each_fail() -> None:
    got = [
        _got("e1", "/a", webhook_id="msg_other"),
        _got("e1", "/a", "unsigned", verified=False),
        _got("e2", "/b", at=100.0),  # before the disable
        _got("e3", "/b", at=100.0 + DISABLE_GRACE_S / 2),  # claimed just before it
        _got("e4", "/b", at=100.0 + DISABLE_GRACE_S + 1),  # after it
    ]
    count = count_pairs(got, {("e1", "/a")}, ENDPOINTS, {"/b": 100.0})
    assert (count.other_webhook_id, count.unsigned, count.after_disable) == (1, 1, 1)
    assert count.lost_count == 0  # the first request was answered 200 and verified
    assert len(count.failures) == 3
