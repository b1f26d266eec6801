"""What bench/chaos.py checks once the load and the faults are over (see its docstring)."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import chaos_webhooks
from chaos_forged import Targets
from chaos_webhooks import Hooks
from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, func, select

from domain.ordering import OrderStatus
from domain.reporting import ExportStatus
from domain.schema import (
    interactions,
    orders,
    payment_ledger,
    products,
    sales_exports,
    visitor_activity,
)
from outbox.schema import (
    OutboxStatus,
    failed_jobs_table,
    inbox_table,
    outbox_table,
    scheduler_firings_table,
)

TOPICS = ("interaction-events", "product-events")
SLOT = timedelta(seconds=10)


@dataclass
class Verdict:
    commands: int = 0
    outbox_rows: int = 0
    pending_after_drain: int = 0
    kafka_records: int = 0
    lost: int = 0
    duplicates: int = 0
    order_violations: int = 0
    effects: int = 0
    effects_expected: int = 0
    effects_wrong: int = 0
    images: int = 0  # product.image_uploaded events
    images_handled: int = 0  # the media group's blurhash job, once each (inbox)
    products_without_blurhash: int = 0
    failed_jobs: dict[str, int] = field(default_factory=dict)
    hostile_records: int = 0
    forged_records: int = 0  # produced by the forged-records fault
    forged_failed_once: int = 0  # of them, exactly one failed job each, with its reason
    forged_fanned: int = 0  # of them, on a topic the webhooks group reads too (exports)
    forged_fanned_failed: int = 0  # of those, one webhooks/not_verified failed job each
    paid_order: str = ""  # the status of the order of the verified webhook (PAID)
    other_tenant_order: str = ""  # the status of chaos-b's order (never PAID)
    ledger: list[str] = field(default_factory=list)  # payment_ledger as order:cents
    ledger_expected: list[str] = field(default_factory=list)  # the verified payment only
    export_status: str = ""  # the real export (ready)
    export_path: str = ""  # under its tenant's folder
    export_tenant: str = ""
    export_files: list[str] = field(default_factory=list)  # every file under EXPORTS_DIR
    webhooks: dict[str, Any] = field(default_factory=dict)  # bench/chaos_webhooks.py
    slots_fired: int = 0
    slots_due: int = 0
    faults: list[dict[str, Any]] = field(default_factory=list)
    restarts: int = 0
    writers_failed: int = 0  # writer processes that did not finish their commands
    manual_interventions: int = 0  # this script makes none
    took_s: float = 0.0

    @property
    def failures(self) -> list[str]:
        why = []
        if self.writers_failed:
            why.append(f"{self.writers_failed} writer(s) did not finish (see their logs)")
        if self.lost or self.pending_after_drain:
            why.append(f"{self.lost} lost, {self.pending_after_drain} still pending")
        if self.order_violations:
            why.append(f"{self.order_violations} keys out of order")
        if self.effects_wrong or self.effects != self.effects_expected:
            why.append(f"effects {self.effects} of {self.effects_expected}")
        if self.images_handled != self.images or self.products_without_blurhash:
            why.append(
                f"media: {self.images_handled} of {self.images} images handled, "
                f"{self.products_without_blurhash} products without a blurhash"
            )
        forged = self.forged_records + self.forged_fanned
        if sum(self.failed_jobs.values()) != self.hostile_records + forged:
            why.append(
                f"failed jobs {self.failed_jobs} for {self.hostile_records} hostile and "
                f"{self.forged_records} forged records ({self.forged_fanned} read twice)"
            )
        if self.forged_failed_once != self.forged_records:
            why.append(
                f"forged records: {self.forged_failed_once} of {self.forged_records} in failed "
                "jobs once with their reason"
            )
        if (
            self.paid_order != OrderStatus.PAID
            or self.other_tenant_order == OrderStatus.PAID
            or self.ledger != self.ledger_expected
        ):
            why.append(
                f"payments: verified order {self.paid_order}, other tenant's order "
                f"{self.other_tenant_order}, ledger {self.ledger} (expected "
                f"{self.ledger_expected})"
            )
        if (
            self.export_status != ExportStatus.READY
            or not self.export_path.startswith(f"{self.export_tenant}/")
            or self.export_files != [self.export_path]
        ):
            why.append(
                f"export {self.export_status} at {self.export_path!r}; files {self.export_files}"
            )
        if self.forged_fanned_failed != self.forged_fanned:
            why.append(
                f"forged records: {self.forged_fanned_failed} of {self.forged_fanned} in the "
                "webhooks group's failed jobs once (not_verified)"
            )
        return why + self._later_failures()

    def _later_failures(self) -> list[str]:
        why = chaos_webhooks.failures(self.webhooks)
        if self.slots_fired != self.slots_due:
            why.append(f"scheduler slots {self.slots_fired} accounted of {self.slots_due} due")
        if any(f["resumed_s"] is None for f in self.faults):
            why.append("progress did not resume within 120 s after a fault")
        if any(f.get("published_s", 0) is None for f in self.faults):
            why.append("publishing did not resume within 120 s after a fault")
        return why

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "failures": self.failures}

    def print(self, console: Console) -> None:
        table = Table("measure", "value", title="chaos run: the guarantees")
        rows = [
            ("commands committed (interactions, stock, images)", f"{self.commands:,}"),
            ("outbox rows", f"{self.outbox_rows:,}"),
            ("records in Kafka (read until idle)", f"{self.kafka_records:,}"),
            ("lost (outbox rows not in Kafka)", str(self.lost)),
            ("duplicate deliveries", str(self.duplicates)),
            ("keys out of order (first occurrence)", str(self.order_violations)),
            ("effects applied / expected", f"{self.effects:,} / {self.effects_expected:,}"),
            ("visitors with a wrong count", str(self.effects_wrong)),
            ("images handled by media / uploaded", f"{self.images_handled} / {self.images}"),
            ("products with an image but no blurhash", str(self.products_without_blurhash)),
            ("failed jobs by reason", str(self.failed_jobs or "none")),
            ("hostile records produced", str(self.hostile_records)),
            ("forged records produced", str(self.forged_records)),
            ("forged records failed once, with their reason", str(self.forged_failed_once)),
            ("order of the verified webhook", self.paid_order),
            ("order of the other tenant (never paid)", self.other_tenant_order),
            ("payment ledger / expected", f"{self.ledger} / {self.ledger_expected}"),
            ("export", f"{self.export_status} at {self.export_path}"),
            ("export files", ", ".join(self.export_files) or "none"),
            *chaos_webhooks.rows(self.webhooks),
            ("scheduler slots accounted / due", f"{self.slots_fired} / {self.slots_due}"),
            ("writers that did not finish", str(self.writers_failed)),
            ("processes restarted by their supervisors", str(self.restarts)),
            ("manual interventions", str(self.manual_interventions)),
            ("took", f"{self.took_s:.0f} s"),
        ]
        for name, value in rows:
            table.add_row(name, value)
        console.print(table)
        faults = Table("at", "fault", "progress again after", "publishing after", title="faults")
        for f in self.faults:
            resumed, published = (
                "never (120 s)" if f[k] is None else f"{f[k]:.1f} s"
                for k in ("resumed_s", "published_s")
            )
            faults.add_row(f"{f['at_s']} s", f["fault"], resumed, published)
        console.print(faults)
        verdict = "every guarantee held" if self.ok else "FAILED: " + "; ".join(self.failures)
        console.print(verdict, style="green" if self.ok else "bold red")


def check(
    engine: Engine,
    bootstrap: str,
    faults: list[dict[str, Any]],
    targets: Targets,
    exports_dir: Path,
    *,
    hooks: Hooks,
    drain_s: float,
    console: Console,
) -> Verdict:
    v = Verdict(faults=faults)
    v.hostile_records = sum(1 for f in faults if f["fault"].startswith("a hostile record"))
    v.forged_records = len(targets.sent)
    v.forged_fanned = len(targets.fanned)
    v.export_tenant = targets.tenant
    v.ledger_expected = [f"{targets.order_id}:{targets.amount_cents}"]
    deadline = time.monotonic() + drain_s
    while time.monotonic() < deadline:
        _database(engine, v)
        _forged(engine, targets, exports_dir, v)
        media_done = v.images_handled == v.images and not v.products_without_blurhash
        # The forged records' failed jobs, the verified payment and the export, too.
        forged_done = (
            sum(v.failed_jobs.values()) >= v.hostile_records + v.forged_records + v.forged_fanned
            and v.paid_order == OrderStatus.PAID
            and v.export_status != ExportStatus.REQUESTED
        )
        drained = not v.pending_after_drain and v.effects == v.effects_expected
        v.webhooks = chaos_webhooks.verdict(engine, hooks)
        if drained and media_done and forged_done and not v.webhooks["failures"]:
            break
        time.sleep(2)
    console.log("reading every record back from Kafka")
    _kafka(engine, bootstrap, v)
    return v


def _database(engine: Engine, v: Verdict) -> None:
    o, f = outbox_table, failed_jobs_table
    with engine.connect() as conn:
        v.outbox_rows = conn.execute(select(func.count()).select_from(o)).scalar_one()
        v.pending_after_drain = conn.execute(
            select(func.count()).where(o.c.status == OutboxStatus.PENDING)
        ).scalar_one()
        committed: dict[str, int] = dict(
            conn.execute(
                select(interactions.c.visitor_id, func.count()).group_by(interactions.c.visitor_id)
            ).all()
        )
        counted: dict[str, int] = dict(
            conn.execute(select(visitor_activity.c.visitor_id, visitor_activity.c.interactions))
            .tuples()
            .all()
        )
        v.commands = conn.execute(
            select(func.count()).where(
                o.c.topic.in_(TOPICS),
                o.c.type.not_in(("product.created", "product.blurhash_set")),
            )
        ).scalar_one()
        v.failed_jobs = {
            f"{group}/{reason}": n
            for group, reason, n in conn.execute(
                select(f.c.group_name, f.c.reason, func.count()).group_by(
                    f.c.group_name, f.c.reason
                )
            )
        }
        v.images = conn.execute(
            select(func.count()).where(  # not its retry copies
                o.c.topic == "product-events", o.c.type == "product.image_uploaded"
            )
        ).scalar_one()
        i = inbox_table
        v.images_handled = conn.execute(
            select(func.count()).where(
                i.c.group_name == "media", i.c.job_name == "generate-product-blurhash"
            )
        ).scalar_one()
        v.products_without_blurhash = conn.execute(
            select(func.count()).where(
                products.c.image_path.is_not(None), products.c.blurhash.is_(None)
            )
        ).scalar_one()
        s = scheduler_firings_table
        slots: list[tuple[Any, int]] = [
            (slot, int(coalesced))
            for slot, coalesced in conn.execute(
                select(s.c.slot, s.c.coalesced).where(
                    s.c.job == "sync-analytics", s.c.manual.is_(False)
                )
            )
        ]
    v.effects_expected = sum(committed.values())
    v.effects = sum(counted.get(k, 0) for k in committed)
    v.effects_wrong = sum(1 for k, n in committed.items() if counted.get(k) != n)
    if slots:
        first, last = min(s for s, _ in slots), max(s for s, _ in slots)
        v.slots_due = int((last - first) / SLOT) + 1
        v.slots_fired = len(slots) + sum(c for _, c in slots)


def _forged(engine: Engine, t: Targets, exports_dir: Path, v: Verdict) -> None:
    """What the forged records must not have changed, and their failed jobs."""
    f = failed_jobs_table
    with engine.connect() as conn:
        status = dict(
            conn.execute(
                select(orders.c.id, orders.c.status).where(
                    orders.c.id.in_((t.order_id, t.other_order_id))
                )
            )
            .tuples()
            .all()
        )
        ledger = conn.execute(
            select(payment_ledger.c.order_id, payment_ledger.c.amount_cents).order_by(
                payment_ledger.c.order_id
            )
        ).all()
        export = conn.execute(
            select(sales_exports.c.status, sales_exports.c.path).where(
                sales_exports.c.id == t.export_id
            )
        ).one()
        failed = conn.execute(
            select(f.c.event_id, f.c.reason, f.c.group_name).where(f.c.event_id.in_(list(t.sent)))
        ).all()
    v.paid_order = str(status.get(t.order_id))
    v.other_tenant_order = str(status.get(t.other_order_id))
    v.ledger = [f"{order}:{cents}" for order, cents in ledger]
    v.export_status, v.export_path = str(export.status), str(export.path or "")
    v.export_files = sorted(
        str(p.relative_to(exports_dir)) for p in exports_dir.rglob("*") if p.is_file()
    )
    reasons: dict[str, list[str]] = defaultdict(list)
    fanned: dict[str, list[str]] = defaultdict(list)  # the webhooks group's, read back first
    for event_id, reason, group in failed:
        (fanned if group == "webhooks" else reasons)[event_id].append(reason)
    v.forged_failed_once = sum(1 for ce_id, r in t.sent.items() if reasons[ce_id] == [r])
    v.forged_fanned_failed = sum(1 for ce_id in t.fanned if fanned[ce_id] == ["not_verified"])


def _kafka(engine: Engine, bootstrap: str, v: Verdict) -> None:
    o = outbox_table
    with engine.connect() as conn:
        rows = conn.execute(
            select(o.c.id, o.c.event_id, o.c.key).where(o.c.topic.in_(TOPICS))
        ).all()
    ids = {event_id: (row_id, key) for row_id, event_id, key in rows}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False)
    partitions = [
        TopicPartition(t, p) for t in TOPICS for p in sorted(consumer.partitions_for_topic(t) or ())
    ]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    seen: Counter[str] = Counter()
    by_key: dict[str, list[int]] = defaultdict(list)
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 10:
        batch = consumer.poll(timeout_ms=1000, max_records=5000)
        for records in batch.values():
            for record in records:
                headers = dict(record.headers or [])
                event_id = (headers.get("ce_id") or b"").decode(errors="replace")
                if event_id not in ids:
                    continue  # a hostile record, or a copy of one
                v.kafka_records += 1
                seen[event_id] += 1
                if seen[event_id] == 1:
                    row_id, key = ids[event_id]
                    by_key[key].append(row_id)
        if batch:
            idle_since = time.monotonic()
    consumer.close()
    v.lost = sum(1 for event_id in ids if event_id not in seen)
    v.duplicates = sum(n - 1 for n in seen.values())
    v.order_violations = sum(1 for seq in by_key.values() if seq != sorted(seq))
