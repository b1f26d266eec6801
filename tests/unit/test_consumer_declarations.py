"""Job declarations, back-off and record classification, without a broker."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from consumers import Group, JobContext, JobRegistry, exponential, job
from consumers.groups import BoundGroup, check_catalog
from consumers.incoming import read
from domain.analytics import InteractionRecorded
from domain.events import registry


@dataclass
class Record:
    """The fields of a kafka-python ConsumerRecord the runtime reads."""

    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    topic: str = "interaction-events"
    partition: int = 0
    offset: int = 0
    key: bytes | None = b"i-1"


def _group() -> BoundGroup:
    jobs = JobRegistry()

    @job("visits", on=InteractionRecorded, backoff=(60, 120), registry=jobs)
    def visits(event: InteractionRecorded, ctx: JobContext) -> None: ...

    return BoundGroup(Group("g", topics=("interaction-events",), jobs=("visits",)), jobs)


def _record(**headers: str) -> Record:
    body = {"tenant_id": "t", "visitor_id": "v", "kind": "page_view"}
    base = {"ce_id": "11111111-1111-1111-1111-111111111111", "ce_type": "interaction.recorded"}
    return Record(
        json.dumps(body).encode(),
        [
            (k.replace("_", "-") if k.startswith("x_") else k, v.encode())
            for k, v in {**base, **headers}.items()
        ],
    )


def test_job_and_group_names_must_fit_the_inbox_key() -> None:
    with pytest.raises(ValueError, match="1 to 100 characters"):
        Group("g" * 101, topics=("t",), jobs=())
    with pytest.raises(ValueError, match="1 to 100 characters"):
        job("j" * 101, on=InteractionRecorded, registry=JobRegistry())(lambda e, c: None)
    with pytest.raises(ValueError, match="unique_key and unique_for_s together"):
        job("half", on=InteractionRecorded, unique_for_s=60, registry=JobRegistry())(
            lambda e, c: None
        )


def test_backoff_steps_repeat_the_last_and_exponential_is_capped() -> None:
    group = _group()
    steps = group.jobs["visits"].option("backoff")
    assert [steps(n) for n in (1, 2, 3, 9)] == [60, 120, 120, 120]
    grow = exponential(base_s=10, factor=3, max_s=100)
    assert [grow(n) for n in (1, 2, 3, 4)] == [10, 30, 90, 100]


def test_a_record_is_decoded_into_its_event_for_its_jobs() -> None:
    incoming = read(_record(), _group(), registry, max_payload_bytes=10_000)
    assert incoming is not None and incoming.poison is None
    assert [j.name for j in incoming.jobs] == ["visits"]
    assert isinstance(incoming.event, InteractionRecorded)
    assert (incoming.attempt, incoming.message_id) == (1, incoming.event_id)


def test_a_rerun_replay_gets_its_own_inbox_key_and_a_plain_replay_does_not() -> None:
    group = _group()
    plain = read(_record(x_replay_id="r1"), group, registry, max_payload_bytes=10_000)
    rerun = read(
        _record(x_replay_id="r2", x_replay_rerun="true"), group, registry, max_payload_bytes=10_000
    )
    assert plain is not None and rerun is not None
    assert plain.message_id == plain.event_id
    assert rerun.message_id == f"{rerun.event_id}/r2"


def test_a_known_event_no_job_handles_is_skipped_and_an_unknown_one_is_poison() -> None:
    group = _group()
    known = read(_record(ce_type="product.created"), group, registry, max_payload_bytes=10_000)
    unknown = read(_record(ce_type="no.such"), group, registry, max_payload_bytes=10_000)
    named = read(_record(x_job="not-here"), group, registry, max_payload_bytes=10_000)
    assert known is None
    assert unknown is not None and unknown.poison is not None
    assert unknown.poison.reason == "unknown_type"
    assert named is not None and named.poison is not None
    assert named.poison.reason == "unknown_job"


def test_a_retry_carries_its_attempt_and_not_before_time() -> None:
    group = _group()
    retry = _record(x_attempt="3", x_not_before="2026-11-22T10:00:00+00:00")
    retry.topic = group.group.retry_topic
    incoming = read(retry, group, registry, max_payload_bytes=10_000)
    assert incoming is not None
    assert incoming.attempt == 3
    assert incoming.not_before is not None and incoming.not_before.hour == 10


def test_an_attempt_header_off_the_retry_topic_is_ignored() -> None:
    incoming = read(_record(x_attempt="3"), _group(), registry, max_payload_bytes=10_000)
    assert incoming is not None
    assert incoming.attempt == 1


def test_a_crash_looping_child_is_restarted_later_and_later() -> None:
    from pipeline.cli.supervisor import restart_delay

    assert restart_delay(0) == 0.5  # it ran a while: replace it at once
    assert [restart_delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert restart_delay(20) == 30.0


def test_dispatching_an_unknown_job_or_a_job_of_no_group_is_refused_by_name() -> None:
    from consumers.dispatch import Dispatcher
    from jobs.analytics import TenantAnalyticsSyncRequested

    group = _group()
    dispatcher = Dispatcher([group.group], group_registry(group), shards=4)
    request = TenantAnalyticsSyncRequested(tenant_id="t", day="2026-11-22")
    with pytest.raises(LookupError, match="no job named 'nope'; known jobs: visits"):
        dispatcher.dispatch(None, "nope", request)  # type: ignore[arg-type]
    with pytest.raises(LookupError, match="job 'visits' belongs to no consumer group"):
        Dispatcher([], group_registry(group), shards=4).group_of("visits")


def group_registry(group: BoundGroup) -> JobRegistry:
    jobs = JobRegistry()
    for declared in group.jobs.values():
        jobs.add(declared)
    return jobs


def test_an_option_no_middleware_declares_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) retries; options are: .*tries"):
        job("typo", on=InteractionRecorded, retries=3, registry=JobRegistry())(lambda e, c: None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tries": 0}, "tries must be an integer from 1 to 1000"),
        ({"tries": True}, "tries must be an integer"),
        ({"backoff": ()}, "needs at least one delay"),
        ({"backoff": (1, float("nan"))}, "finite"),
        ({"backoff": "60"}, "steps like"),
        ({"timeout_s": -1}, "timeout_s must be a number > 0"),
        ({"rate_limit": float("inf")}, "rate_limit must be finite"),
        ({"priority": "urgent"}, "priority is 'high' or 'default'"),
        ({"unique_key": "k", "unique_for_s": 5}, "unique_key is a function"),
        ({"apply_batch": "nope"}, "apply_batch is a function"),
    ],
)
def test_bad_option_values_are_refused_when_the_job_is_declared(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        job("bad", on=InteractionRecorded, registry=JobRegistry(), **options)(lambda e, c: None)


def test_batch_effects_need_the_batch_transaction() -> None:
    with pytest.raises(ValueError, match="apply_batch needs the batch's transaction"):
        job(
            "outside",
            on=InteractionRecorded,
            transactional=False,
            apply_batch=lambda conn, items: None,
            registry=JobRegistry(),
        )(lambda e, c: None)


def test_a_job_belongs_to_one_group() -> None:
    from consumers.dispatch import Dispatcher

    jobs = JobRegistry()
    job("mine", on=InteractionRecorded, group="a", registry=jobs)(lambda e, c: None)
    a = Group("a", topics=("t",))
    b = Group("b", topics=("t",), jobs=("mine",))
    assert list(BoundGroup(a, jobs).jobs) == ["mine"]  # declared with the job
    with pytest.raises(ValueError, match="job 'mine' is in two consumer groups"):
        Dispatcher([a, b], jobs, shards=4)
    with pytest.raises(ValueError, match="declares group 'a', which does not exist"):
        check_catalog([b], jobs)
    check_catalog([a], jobs)


def test_leaving_a_group_that_already_expelled_the_member_is_not_an_error() -> None:
    import logging

    from consumers.kafka_source import _ExpelledLeave

    record = logging.LogRecord(
        "kafka.coordinator.base",
        logging.ERROR,
        __file__,
        1,
        "LeaveGroup request for group %s failed with error: %s",
        ("g", "UnknownMemberIdError"),
        None,
    )
    assert _ExpelledLeave().filter(record)
    assert record.levelno == logging.INFO
