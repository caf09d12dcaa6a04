"""Write validated ledger records to the database in one transaction: all rows or none.

An elder already in the database (same ID number, found by its blind index) is updated, not
duplicated; their phones and contacts are replaced by the ledger's. Look-ups run in batches
and new elders are bulk-inserted, so 10,000 rows take seconds, not minutes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any, BinaryIO, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from storage.crypto import Vault
from storage.enums import ConsentStatus, Locale
from storage.ledger.reader import LedgerFormatError, read_ledger
from storage.ledger.validate import ElderRecord, RowError, default_risk, validate_rows
from storage.masking import mask_id
from storage.models.elder import Contact, Elder, ElderPhone
from storage.regions import load_region_index

log = logging.getLogger(__name__)

BATCH = 500
CONSENT_BY = "台帐导入"
LOCAL_TZ = ZoneInfo("Asia/Shanghai")

# progress(stage, done, total): stage is "校验" (validating) or "写入" (writing)
Progress = Callable[[str, int, int | None], None]


@dataclass
class ImportSummary:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass
class LedgerImportReport:
    """What an import did (or, with errors or a dry run, would have done)."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)
    rows: int = 0
    source: str = ""
    dry_run: bool = False
    written: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` shape: counts and errors (row, column, reason, masked value)."""
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "errors": [e.as_dict() for e in self.errors],
        }


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _consent_at(record: ElderRecord, now: datetime) -> datetime:
    if record.consent_date is not None:
        return datetime.combine(record.consent_date, time(0), LOCAL_TZ).astimezone(UTC)
    return now


class _Encoder:
    """Encrypts and blind-indexes numbers, caching the hash of repeated ones within an import."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self._hashes: dict[str, str] = {}

    def hash(self, value: str) -> str:
        h = self._hashes.get(value)
        if h is None:
            h = self._hashes[value] = self.vault.blind_index(value)
        return h

    def enc(self, value: str) -> bytes:
        return self.vault.encrypt(value)


def _phone_key(record: ElderRecord, enc: _Encoder) -> list[tuple[str, str]]:
    return [(p.kind.value, enc.hash(p.number)) for p in record.phones]


def _contact_key(record: ElderRecord, enc: _Encoder) -> list[tuple[str, str, str, str | None]]:
    return [
        (c.name, c.relation, c.kind.value, enc.hash(c.phone.number) if c.phone else None)
        for c in record.contacts or ()
    ]


def _phone_rows(elder_id: int, record: ElderRecord, enc: _Encoder) -> list[dict[str, Any]]:
    return [
        {"elder_id": elder_id, "kind": p.kind, "number_enc": enc.enc(p.number), "number_hash": enc.hash(p.number),
         "number_masked": p.masked, "position": i}
        for i, p in enumerate(record.phones)
    ]


def _contact_rows(elder_id: int, record: ElderRecord, enc: _Encoder,
                  alerts: dict[tuple[str, str | None], bool] | None = None) -> list[dict[str, Any]]:
    out = []
    for i, c in enumerate(record.contacts or ()):
        h = enc.hash(c.phone.number) if c.phone else None
        out.append({
            "elder_id": elder_id, "name": c.name, "relation": c.relation, "kind": c.kind,
            "phone_enc": enc.enc(c.phone.number) if c.phone else None, "phone_hash": h,
            "phone_masked": c.phone.masked if c.phone else None, "position": i,
            "may_receive_alerts": (alerts or {}).get((c.name, h), True),
        })
    return out


def _new_elder_row(record: ElderRecord, id_hash: str, enc: _Encoder, now: datetime) -> dict[str, Any]:
    consent = record.consent or ConsentStatus.UNKNOWN
    return {
        "name": record.name, "sex": record.sex, "birth_date": record.birth_date,
        "id_number_enc": enc.enc(record.id.number), "id_number_hash": id_hash,
        "id_number_masked": mask_id(record.id.number), "address": record.address,
        "region_id": record.region_id, "categories": record.categories,
        "risk_tier": record.risk_tier or default_risk(record.categories),
        "locale": record.locale or Locale.ZH, "call_windows": [],
        "consent_status": consent,
        "consent_at": _consent_at(record, now) if consent is ConsentStatus.GRANTED else None,
        "consent_by": CONSENT_BY if consent is not ConsentStatus.UNKNOWN else None,
        "note": record.note, "created_at": now, "updated_at": now,
    }


_ELDER_COLUMNS = ("name", "sex", "birth_date", "region_id", "categories")
_OPTIONAL_COLUMNS = ("address", "risk_tier", "locale", "note")


@dataclass
class _Stored:
    """What the database holds for one elder, as plain values (no ORM objects: 10⁴ rows stay cheap)."""

    id: int
    values: dict[str, Any]
    phones: list[tuple[str, str]] = field(default_factory=list)  # (kind, hash) in order
    contacts: list[tuple[str, str, str, str | None]] = field(default_factory=list)
    alerts: dict[tuple[str, str | None], bool] = field(default_factory=dict)


def _load_stored(session: Session, hashes: Sequence[str]) -> dict[str, _Stored]:
    cols = [getattr(Elder, c) for c in (*_ELDER_COLUMNS, *_OPTIONAL_COLUMNS, "consent_status")]
    stored: dict[str, _Stored] = {}
    for row in session.execute(select(Elder.id, Elder.id_number_hash, *cols).where(Elder.id_number_hash.in_(hashes))):
        eid, h, *vals = row
        stored[h] = _Stored(eid, dict(zip((*_ELDER_COLUMNS, *_OPTIONAL_COLUMNS, "consent_status"), vals, strict=True)))
    if not stored:
        return stored
    by_id = {s.id: s for s in stored.values()}
    ids = list(by_id)
    for eid, kind, h in session.execute(
        select(ElderPhone.elder_id, ElderPhone.kind, ElderPhone.number_hash)
        .where(ElderPhone.elder_id.in_(ids)).order_by(ElderPhone.elder_id, ElderPhone.position, ElderPhone.id)
    ):
        by_id[eid].phones.append((kind.value, h))
    for eid, name, relation, kind, h, alerts in session.execute(
        select(Contact.elder_id, Contact.name, Contact.relation, Contact.kind, Contact.phone_hash,
               Contact.may_receive_alerts)
        .where(Contact.elder_id.in_(ids)).order_by(Contact.elder_id, Contact.position, Contact.id)
    ):
        by_id[eid].contacts.append((name, relation, kind.value, h))
        by_id[eid].alerts[(name, h)] = alerts
    return stored


@dataclass
class _Change:
    elder_id: int
    values: dict[str, Any]
    phones: bool
    contacts: bool
    alerts: dict[tuple[str, str | None], bool]


def _diff(stored: _Stored, record: ElderRecord, enc: _Encoder, now: datetime) -> _Change | None:
    """What must change for the stored elder to match the record; ``None`` if nothing."""
    wanted: dict[str, Any] = {
        "name": record.name, "sex": record.sex, "birth_date": record.birth_date,
        "region_id": record.region_id, "categories": record.categories,
        "address": record.address, "risk_tier": record.risk_tier, "locale": record.locale, "note": record.note,
    }
    values = {k: v for k, v in wanted.items() if v is not None and stored.values[k] != v}
    if record.consent is not None and stored.values["consent_status"] is not record.consent:
        values["consent_status"] = record.consent
        values["consent_at"] = _consent_at(record, now) if record.consent is ConsentStatus.GRANTED else now
        values["consent_by"] = CONSENT_BY
    phones = stored.phones != _phone_key(record, enc)
    contacts = record.contacts is not None and stored.contacts != _contact_key(record, enc)
    if not (values or phones or contacts):
        return None
    values["updated_at"] = now
    return _Change(stored.id, values, phones, contacts, stored.alerts)


def _apply_changes(session: Session, changes: list[tuple[_Change, ElderRecord]], enc: _Encoder) -> None:
    by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for change, _record in changes:
        by_keys.setdefault(tuple(sorted(change.values)), []).append({"id": change.elder_id, **change.values})
    for params in by_keys.values():
        session.execute(update(Elder), params)  # ORM bulk UPDATE by primary key
    phone_ids = [c.elder_id for c, _r in changes if c.phones]
    contact_ids = [c.elder_id for c, _r in changes if c.contacts]
    if phone_ids:
        session.execute(delete(ElderPhone).where(ElderPhone.elder_id.in_(phone_ids)))
        rows = [row for c, r in changes if c.phones for row in _phone_rows(c.elder_id, r, enc)]
        if rows:
            session.execute(insert(ElderPhone), rows)
    if contact_ids:
        session.execute(delete(Contact).where(Contact.elder_id.in_(contact_ids)))
        rows = [row for c, r in changes if c.contacts for row in _contact_rows(c.elder_id, r, enc, c.alerts)]
        if rows:
            session.execute(insert(Contact), rows)


def apply_records(
    session: Session,
    vault: Vault,
    records: Sequence[ElderRecord],
    *,
    now: datetime,
    progress: Progress | None = None,
) -> ImportSummary:
    """Create or update an elder per record inside the caller's transaction (never commits).

    Existing elders are found by the ID number's blind index, one query per batch of 500; new
    ones are bulk-inserted, changed ones bulk-updated, and their phones/contacts replaced only
    when they differ (so "unchanged" really means no write at all).
    """
    enc = _Encoder(vault)
    summary = ImportSummary()
    total = len(records)
    done = 0
    for chunk in _chunks(list(records), BATCH):
        hashes = [enc.hash(r.id.number) for r in chunk]
        stored = _load_stored(session, hashes)
        new: list[tuple[ElderRecord, str]] = []
        changes: list[tuple[_Change, ElderRecord]] = []
        for r, h in zip(chunk, hashes, strict=True):
            if h not in stored:
                new.append((r, h))
            elif (change := _diff(stored[h], r, enc, now)) is not None:
                changes.append((change, r))
            else:
                summary.unchanged += 1
        if changes:
            _apply_changes(session, changes, enc)
            summary.updated += len(changes)
        if new:
            table = cast(Table, Elder.__table__)
            rows = [_new_elder_row(r, h, enc, now) for r, h in new]
            ids = dict(session.execute(table.insert().returning(table.c.id_number_hash, table.c.id), rows).tuples().all())
            phone_rows = [row for r, h in new for row in _phone_rows(ids[h], r, enc)]
            contact_rows = [row for r, h in new for row in _contact_rows(ids[h], r, enc)]
            if phone_rows:
                session.execute(insert(cast(Table, ElderPhone.__table__)), phone_rows)
            if contact_rows:
                session.execute(insert(cast(Table, Contact.__table__)), contact_rows)
            summary.created += len(new)
        done += len(chunk)
        if progress is not None:
            progress("写入", done, total)
    return summary


def import_ledger(
    source: Path | BinaryIO,
    *,
    sessions: sessionmaker[Session],
    vault: Vault,
    now: Callable[[], datetime],
    county_code: str | None = None,
    dry_run: bool = False,
    filename: str | None = None,
    progress: Progress | None = None,
) -> LedgerImportReport:
    """Read, validate and (unless there is an error or ``dry_run``) write a ledger file.

    All or nothing: any row error, and nothing is written. A dry run computes the same counts
    inside a transaction that is rolled back. This is what the CLI and the console both call.
    """
    report = LedgerImportReport(dry_run=dry_run)
    try:
        table = read_ledger(source, filename=filename)
    except LedgerFormatError as exc:
        report.errors.append(RowError(None, "", "", str(exc)))
        return report
    report.source = table.source
    with sessions() as session:
        try:
            regions = load_region_index(session, county_code)
        except LookupError as exc:
            report.errors.append(RowError(None, "乡镇（街道）", "", str(exc)))
            return report
    today = now().astimezone(LOCAL_TZ).date()

    def on_row(row: int) -> None:
        if progress is not None:
            progress("校验", row, table.total_hint)

    try:  # rows are read lazily: a file damaged half-way is found here
        result = validate_rows(table.rows, regions, today=today, progress=on_row if progress else None)
    except LedgerFormatError as exc:
        report.errors.append(RowError(None, "", "", str(exc)))
        return report
    report.rows = result.rows
    report.errors = result.errors
    if result.errors:
        log.info("ledger import refused: %d rows, %d errors", result.rows, len(result.errors),
                 extra={"action": "ledger_import_refused"})
        return report
    with sessions() as session:
        tx = session.begin()
        try:
            summary = apply_records(session, vault, result.records, now=now(), progress=progress)
        except IntegrityError:
            # Another import (or the console) added one of these elders meanwhile: nothing written.
            tx.rollback()
            report.errors.append(RowError(None, "", "", "导入期间有其他操作同时修改了老人档案，本次未写入任何数据；请重新导入"))
            return report
        except BaseException:
            tx.rollback()
            raise
        if dry_run:
            tx.rollback()
        else:
            tx.commit()
    report.created, report.updated, report.unchanged = summary.created, summary.updated, summary.unchanged
    report.written = not dry_run
    log.info("ledger import %s: %d rows, created %d, updated %d, unchanged %d",
             "dry run" if dry_run else "written", result.rows, summary.created, summary.updated, summary.unchanged,
             extra={"action": "ledger_import"})
    return report


__all__ = ["ImportSummary", "LedgerImportReport", "Progress", "apply_records", "import_ledger"]
