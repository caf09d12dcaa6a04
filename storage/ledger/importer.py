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
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

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


def _update_elder(elder: Elder, record: ElderRecord, enc: _Encoder, now: datetime) -> bool:
    """Apply the record to a loaded elder; True if anything changed."""
    wanted: dict[str, Any] = {
        "name": record.name, "sex": record.sex, "birth_date": record.birth_date,
        "region_id": record.region_id, "categories": record.categories,
    }
    for attr, value in (("address", record.address), ("risk_tier", record.risk_tier),
                        ("locale", record.locale), ("note", record.note)):
        if value is not None:
            wanted[attr] = value
    changed = False
    for attr, value in wanted.items():
        if getattr(elder, attr) != value:
            setattr(elder, attr, value)
            changed = True
    if record.consent is not None and elder.consent_status is not record.consent:
        elder.consent_status = record.consent
        elder.consent_at = _consent_at(record, now) if record.consent is ConsentStatus.GRANTED else now
        elder.consent_by = CONSENT_BY
        changed = True
    if [(p.kind.value, p.number_hash) for p in elder.phones] != _phone_key(record, enc):
        elder.phones = [ElderPhone(**row) for row in _phone_rows(elder.id, record, enc)]
        changed = True
    if record.contacts is not None:
        current = [(c.name, c.relation, c.kind.value, c.phone_hash) for c in elder.contacts]
        if current != _contact_key(record, enc):
            alerts = {(c.name, c.phone_hash): c.may_receive_alerts for c in elder.contacts}
            elder.contacts = [Contact(**row) for row in _contact_rows(elder.id, record, enc, alerts)]
            changed = True
    if changed:
        elder.updated_at = now
    return changed


def apply_records(
    session: Session,
    vault: Vault,
    records: Sequence[ElderRecord],
    *,
    now: datetime,
    progress: Progress | None = None,
) -> ImportSummary:
    """Create or update an elder per record inside the caller's transaction (flushes, never commits)."""
    enc = _Encoder(vault)
    summary = ImportSummary()
    total = len(records)
    hashes = [enc.hash(r.id.number) for r in records]
    done = 0
    for chunk in _chunks(list(zip(records, hashes, strict=True)), BATCH):
        chunk_hashes = [h for _r, h in chunk]
        existing = {
            e.id_number_hash: e
            for e in session.scalars(
                select(Elder)
                .where(Elder.id_number_hash.in_(chunk_hashes))
                .options(selectinload(Elder.phones), selectinload(Elder.contacts))
            )
        }
        new = [(r, h) for r, h in chunk if h not in existing]
        for r, h in chunk:
            if h in existing:
                if _update_elder(existing[h], r, enc, now):
                    summary.updated += 1
                else:
                    summary.unchanged += 1
        session.flush()
        if new:
            rows = [_new_elder_row(r, h, enc, now) for r, h in new]
            ids = dict(
                session.execute(insert(Elder).returning(Elder.id_number_hash, Elder.id), rows).tuples().all()
            )
            phone_rows: list[dict[str, Any]] = []
            contact_rows: list[dict[str, Any]] = []
            for r, h in new:
                phone_rows.extend(_phone_rows(ids[h], r, enc))
                contact_rows.extend(_contact_rows(ids[h], r, enc))
            if phone_rows:
                session.execute(insert(ElderPhone), phone_rows)
            if contact_rows:
                session.execute(insert(Contact), contact_rows)
            summary.created += len(new)
        for e in existing.values():
            session.expunge(e)  # keep the identity map small on big files
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

    result = validate_rows(table.rows, regions, today=today, progress=on_row if progress else None)
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
