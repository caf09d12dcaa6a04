"""The planner: stream elders in batches, ask the policy, write due check-ins idempotently.

Inserts use ``INSERT … ON CONFLICT (elder_id, slot) DO NOTHING``: the batch's class plans go into a
temporary table and are joined to the elder ids in one INSERT … SELECT (see :func:`_number_plans`;
PostgreSQL: a batch whose slots are most likely new is tried first as a plain INSERT and falls back
to ON CONFLICT if a slot exists after all),
so re-running a tick, or two planners racing, never creates a second call for a slot. Memory stays
flat: one batch of elders (keyset pagination by id) is in memory at a time. The policy runs once
per class of elder, not once per elder (see :class:`ClassPlanner`).
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time as _time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

import psycopg
from sqlalchemy import Integer, String, Text, func, literal_column, or_, select, text, type_coerce, update
from sqlalchemy import cast as sa_cast
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Cadence, Policy, PolicySet
from scheduler.policy import (
    ActiveEvent,
    ElderFacts,
    History,
    PlannedCheckIn,
    _local_midnight,
    effective_tier,
    home_visit_months,
    periods,
    plan_elder,
    routine_cadence,
)
from scheduler.queue import OPEN, _record_many, check_transition, write_session
from scheduler.windows import LOCAL_TZ, allowed_windows
from storage.enums import CheckInStatus as S
from storage.enums import ConsentStatus, ElderStatus, EventKind, RiskTier
from storage.models import (
    CheckIn,
    CheckInTransition,
    Elder,
    HomeVisitTask,
    Region,
    SurgeEvent,
    SurgeEventRegion,
)
from storage.models.base import mask_to_categories

log = logging.getLogger(__name__)
BATCH = 5000


@dataclass
class PlanResult:
    elders: int = 0
    planned: int = 0  # check-ins the policy asked for
    inserted: int = 0  # new rows (the rest existed already)
    home_tasks: int = 0
    promoted: int = 0  # planned → due
    cancelled: int = 0
    revived: int = 0  # cancelled by the planner earlier, wanted again
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"老人 {self.elders} 位，应有探访 {self.planned} 条，新写入 {self.inserted} 条，"
                f"上门任务新增 {self.home_tasks} 条，转为待拨打 {self.promoted} 条，取消 {self.cancelled} 条，"
                f"用时 {self.seconds:.1f} 秒")


@lru_cache(maxsize=128)
def _cats(mask: int) -> Any:
    return mask_to_categories(mask)


def load_events(session: Session, start: datetime, end: datetime, *, event_ids: list[int] | None = None) -> list[ActiveEvent]:
    """Active weather/lockdown events overlapping ``[start, end)``, with their region paths."""
    q = (select(SurgeEvent, Region.path).join(SurgeEventRegion, SurgeEventRegion.event_id == SurgeEvent.id)
         .join(Region, Region.id == SurgeEventRegion.region_id)
         .where(SurgeEvent.status == "active", SurgeEvent.starts_at < end, SurgeEvent.ends_at > start))
    if event_ids is not None:
        q = q.where(SurgeEvent.id.in_(event_ids))
    by_id: dict[int, tuple[SurgeEvent, list[str]]] = {}
    for ev, path in session.execute(q):
        by_id.setdefault(ev.id, (ev, []))[1].append(path)
    return [ActiveEvent(ev.id, EventKind(ev.kind), ev.starts_at, ev.ends_at, tuple(sorted(paths)), ev.title,
                        ev.level, ev.hazard) for ev, paths in by_id.values()]


def _status_in(sqlite_db: bool, statuses: tuple[S, ...]) -> Any:
    """``checkins.status IN (...)``; on SQLite written ``+status`` so the query planner cannot pick
    the status-led claim index (it would walk every planned row of the table) and uses the
    (elder, slot) key for the elder-id range instead. (SQLAlchemy drops ``with_hint`` on SQLite,
    so ``INDEXED BY`` cannot be used through it.)"""
    if sqlite_db:
        return literal_column("+checkins.status", String).in_([st.value for st in statuses])
    return CheckIn.status.in_(statuses)


def _region_filter(paths: list[str]) -> Any:
    return or_(*[or_(Region.path == p, Region.path.like(p + "/%")) for p in paths])


# -- reading elders ------------------------------------------------------------------------

_RawElder = tuple[int, str, int, str, str | None, datetime | None, str]
_Hist = dict[int, tuple[datetime | None, int]]


def _raw_batches(
    sessions: sessionmaker[Session], *, region_paths: list[str] | None, elder_ids: list[int] | None, batch: int,
    history_since: datetime | None, any_status: bool = False,
) -> Iterator[tuple[list[Any], _Hist]]:
    """Active elders as plain rows (id, path, mask, tier, call_windows JSON text, pause_until, consent),
    ``batch`` at a time in id order (keyset pagination), with each batch's visit history.
    With ``any_status`` elders of every status, each row ending with the status."""
    last = 0
    while True:
        with sessions() as s:
            cols: list[Any] = [Elder.id, Region.path, type_coerce(Elder.categories, Integer),
                               type_coerce(Elder.risk_tier, String), sa_cast(Elder.call_windows, Text),
                               Elder.pause_until, type_coerce(Elder.consent_status, String)]
            if any_status:
                cols.append(type_coerce(Elder.status, String))
            q = (select(*cols).join(Region, Region.id == Elder.region_id).where(Elder.id > last)
                 .order_by(Elder.id).limit(batch))
            if not any_status:
                q = q.where(Elder.status == ElderStatus.ACTIVE)
            if region_paths:
                q = q.where(_region_filter(region_paths))
            if elder_ids is not None:
                q = q.where(Elder.id.in_(elder_ids))
            rows: list[Any] = list(s.connection().execute(q).fetchall())
            if not rows:
                return
            lo, hi = rows[0][0], rows[-1][0]
            lite = s.get_bind().dialect.name == "sqlite"
            hq = (select(CheckIn.elder_id,
                         func.max(CheckIn.completed_at).filter(CheckIn.status == S.DONE).label("done"),
                         func.count().filter(CheckIn.status.in_(OPEN)).label("open"))
                  .where(CheckIn.elder_id >= lo, CheckIn.elder_id <= hi)
                  .group_by(CheckIn.elder_id))
            if history_since is not None:
                # (On SQLite neither status nor completed_at may pick an index: by elder range.)
                done_since = (literal_column("+checkins.completed_at") >= type_coerce(history_since, CheckIn.completed_at.type)
                              if lite else CheckIn.completed_at >= history_since)
                hq = hq.where(or_(_status_in(lite, OPEN), done_since))
            hist = {h[0]: (h[1], int(h[2] or 0)) for h in s.connection().execute(hq).all()}
        yield rows, hist
        last = hi
        if len(rows) < batch:
            return


@lru_cache(maxsize=4096)
def _windows_of(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return ()
    try:
        v = json.loads(raw)
    except ValueError:
        return ()
    return tuple(str(w) for w in v) if isinstance(v, list) else ()


def _facts(r: Any, elder_id: int | None = None, pause: datetime | None = None) -> ElderFacts:
    return ElderFacts(r[0] if elder_id is None else elder_id, r[1], _cats(r[2] or 0), RiskTier(r[3]),
                      _windows_of(r[4]), r[5] if elder_id is None else pause, ConsentStatus(r[6]),
                      ElderStatus.ACTIVE)


def iter_elder_batches(
    sessions: sessionmaker[Session], *, region_paths: list[str] | None = None, elder_ids: list[int] | None = None,
    batch: int = BATCH, history_since: datetime | None = None,
) -> Iterator[list[tuple[ElderFacts, History]]]:
    """Active elders in id order, ``batch`` at a time, each with its visit history."""
    empty = History()
    for rows, hist in _raw_batches(sessions, region_paths=region_paths, elder_ids=elder_ids, batch=batch,
                                   history_since=history_since):
        yield [(_facts(r), History(*hist[r[0]]) if r[0] in hist else empty) for r in rows]


# -- plans per class of elder --------------------------------------------------------------
#
# ``plan_elder`` depends on the elder's id only through a few residues (which day of the spread,
# which 15-minute step of which window, which surge bucket), so two elders of the same class —
# same policy, events, tier, windows, consent, pause and (normalised) history — whose ids are
# congruent modulo M get the same check-ins. The planner computes each (class, id mod M) plan once
# and stamps it with the elder id: 10⁶ elders cost a few thousand policy evaluations, not 10⁶.

_MAX_MODULUS = 20000


def _lcm(values: list[int]) -> int:
    out = 1
    for v in values:
        out = out * v // math.gcd(out, v)
    return out


_SPANS = {Cadence.MONTHLY: (28, 29, 30, 31), Cadence.BIWEEKLY: (13, 14, 15, 16), Cadence.WEEKLY: (7,),
          Cadence.TWICE_WEEKLY: (3, 4), Cadence.DAILY: (1,), Cadence.TWICE_DAILY: (1,)}


def id_modulus(policy: Policy, n_windows: int) -> int | None:
    """M such that plan_elder(id) and plan_elder(id + M) differ only in the id (None: too large)."""
    mods = [4, n_windows * 8]
    for cad in Cadence:
        spread = policy.cadence.spread_days.get(cad.value, 1)
        mods.append(spread * n_windows * 8)
        mods.extend(min(spread, span) for span in _SPANS[cad])
    m = _lcm(mods)
    return m if m <= _MAX_MODULUS else None


@dataclass(slots=True)
class _Tpl:
    plans: list[PlannedCheckIn]  # with elder_id = the phase
    params: list[Any]  # per check-in: the database values after elder_id (tuple) or a COPY line tail (str)
    slots: dict[str, PlannedCheckIn] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.slots = {p.slot: p for p in self.plans}


def _materialise(pairs: list[tuple[int, _Tpl]]) -> Iterator[PlannedCheckIn]:
    for eid, tpl in pairs:
        for p in tpl.plans:
            yield p if p.elder_id == eid else replace(p, elder_id=eid)


class _Class:
    __slots__ = ("boundaries", "cats", "m", "policy", "r", "simple", "tasks", "tpls")

    def __init__(self, policy: Policy, r: Any, boundaries: tuple[date, ...], m: int | None, tasks: list[Any]) -> None:
        self.policy, self.r, self.boundaries, self.m, self.tasks = policy, r, boundaries, m, tasks
        self.simple: dict[int, _Tpl] = {}
        self.tpls: dict[tuple[Any, ...], _Tpl] = {}


class ClassPlanner:
    """Plans elders by class (see above); ``expand`` turns a batch of raw rows into insert rows.

    With ``insert_until`` only check-ins due before it become insert rows; the class plans (used to
    reconcile existing rows) still cover the whole range."""

    def __init__(self, policies: PolicySet, start: datetime, end: datetime, now: datetime, *,
                 events: list[ActiveEvent], dialect: str, home_tasks: bool = True,
                 insert_until: datetime | None = None) -> None:
        self.policies, self.start, self.end, self.now, self.events = policies, start, end, now, events
        self.insert_until = insert_until
        self.home_tasks = home_tasks
        self.floor0 = max(start, now)
        self._paths: dict[str, tuple[Any, ...]] = {}
        self._pols: dict[int, Policy] = {}
        self._classes: dict[tuple[Any, ...], _Class] = {}
        self._enc = _Encoder(dialect, now)
        self.builds = 0

    def _path_key(self, path: str) -> tuple[Any, ...]:
        pk = self._paths.get(path)
        if pk is None:
            pol = self.policies.for_path(path)
            covering = tuple(e.id for e in self.events if e.covers(path))
            self._pols[id(pol)] = pol
            pk = self._paths[path] = (id(pol), covering)
        return pk

    def _class(self, key: tuple[Any, ...], r: Any) -> _Class:
        pol = self._pols[key[0][0]]
        windows = allowed_windows(_windows_of(r[4]), pol)
        tier = effective_tier(_cats(r[2] or 0), RiskTier(r[3]))
        cads = [routine_cadence(tier, pol)]
        if any(e.kind is EventKind.LOCKDOWN and e.id in key[0][1] for e in self.events):
            cads.append(cads[0].doubled())
        first = self.start.astimezone(LOCAL_TZ).date()
        last = (self.end - timedelta(microseconds=1)).astimezone(LOCAL_TZ).date()
        marks = {p[1] for c in cads for p in periods(c, first, last)}
        marks.add(self.now.astimezone(LOCAL_TZ).date().replace(day=1))
        facts = _facts(r)
        tasks = []
        if self.home_tasks:
            tasks = [self._enc.task(month, due) for month, due in home_visit_months(facts, self.start, self.end)]
        c = _Class(pol, r, tuple(sorted(marks)), id_modulus(pol, len(windows)), tasks)
        self._classes[key] = c
        return c

    def _hist_key(self, c: _Class, h: tuple[datetime | None, int]) -> tuple[date | None, bool]:
        done, open_items = h
        norm = None
        if done is not None:
            d = done.astimezone(LOCAL_TZ).date()
            for b in c.boundaries:  # only which period boundaries it passed matters
                if b <= d:
                    norm = b
                else:
                    break
        return norm, open_items > 0

    def _build(self, c: _Class, r: Any, phase: int, pause: datetime | None, hk: tuple[date | None, bool]) -> _Tpl:
        self.builds += 1
        hist = History(_local_midnight(hk[0]) if hk[0] is not None else None, 1 if hk[1] else 0)
        plans = plan_elder(_facts(r, phase, pause), self.start, self.end, now=self.now, policy=c.policy,
                           events=self.events, history=hist)
        until = self.insert_until
        return _Tpl(plans, [self._enc.checkin(p) for p in plans if until is None or p.due_at < until])

    def expand(self, rows: list[Any], hist: _Hist, want_plans: bool = False
               ) -> tuple[list[Any], list[Any], int, list[tuple[int, _Tpl]]]:
        """(check-ins to write, home-task rows, number planned, (elder id, class plan) pairs when asked
        for: one per elder, the plan possibly empty).

        Check-ins to write are (elder id, class plan) pairs of the elders with something planned."""
        out: list[Any] = []
        tasks: list[Any] = []
        plans: list[tuple[int, _Tpl]] = []
        planned = 0
        paths, classes, floor0 = self._paths, self._classes, self.floor0
        for r in rows:
            eid = r[0]
            pk = paths.get(r[1]) or self._path_key(r[1])
            key = (pk, r[2], r[3], r[4], r[6])
            c = classes.get(key) or self._class(key, r)
            pause = r[5] if r[5] is not None and r[5] > floor0 else None
            h = hist.get(eid)
            if c.m is None:
                tpl = self._build(c, r, eid, pause, self._hist_key(c, h) if h else (None, False))
                phase = eid
            elif pause is None and h is None:
                phase = eid % c.m
                tpl = c.simple.get(phase) or c.simple.setdefault(phase, self._build(c, r, phase, None, (None, False)))
            else:
                phase = eid % c.m
                hk = self._hist_key(c, h) if h else (None, False)
                k = (phase, pause, hk)
                tpl = c.tpls.get(k) or c.tpls.setdefault(k, self._build(c, r, phase, pause, hk))
            if tpl.params:
                planned += len(tpl.params)
                out.append((eid, tpl))  # written as (elder, class plan) pairs: see _number_plans
            if want_plans:  # also an empty plan: a re-plan reconciles the elder's existing calls
                plans.append((eid, tpl))
            if c.tasks:
                tasks.extend([(eid, *t) for t in c.tasks])
        return out, tasks, planned, plans


# -- writing -------------------------------------------------------------------------------

_COLS = ("elder_id", "slot", "kind", "status", "priority", "due_at", "next_attempt_at", "ignore_call_window",
         "reasons", "dialog_flags", "attempts", "version", "created_at", "updated_at")
_TASK_COLS = ("elder_id", "month", "due_at", "status", "created_at", "updated_at")
_TPL_COLS = ", ".join(_COLS[1:])


class _Encoder:
    """Database-ready values, computed once per class plan (SQLAlchemy's own bind processors on
    SQLite, so stored values are exactly what the ORM writes; COPY text on PostgreSQL)."""

    def __init__(self, dialect_name: str, now: datetime) -> None:
        self.pg = dialect_name == "postgresql"
        self.now = now
        dialect = (postgresql if self.pg else sqlite).dialect()
        self._procs = {c.name: c.type.dialect_impl(dialect).bind_processor(dialect) for c in CheckIn.__table__.columns}

    def _db(self, col: str, v: Any) -> Any:
        proc = self._procs[col]
        return proc(v) if proc is not None else v

    def checkin(self, p: PlannedCheckIn) -> Any:
        values = {"slot": p.slot, "kind": p.kind, "status": S.DUE if p.due_at <= self.now else S.PLANNED,
                  "priority": p.priority, "due_at": p.due_at, "next_attempt_at": p.due_at,
                  "ignore_call_window": p.ignore_call_window, "reasons": list(p.reasons),
                  "dialog_flags": p.dialog_flags, "attempts": 0, "version": 0, "created_at": self.now,
                  "updated_at": self.now}
        if self.pg:
            return "\t".join(_pg_text(values[c]) for c in _COLS[1:])
        return tuple(self._db(c, values[c]) for c in _COLS[1:])

    def task(self, month: str, due: datetime) -> tuple[Any, ...]:
        return (month, due, "open", self.now, self.now)


def _write_checkins_sqlite(session: Session, pairs: list[tuple[int, _Tpl]]) -> int:
    """SQLite: insert the check-ins of (elder id, class plan) pairs, skipping existing (elder, slot);
    returns the number of new rows. (PostgreSQL: :func:`_write_checkins_pg`.)

    As on PostgreSQL, the batch's class plans go once into a temporary table and the elders as one
    JSON array of [elder id, plan number]; one INSERT … SELECT joins them inside SQLite, so no
    Python tuple is built or bound per check-in.
    """
    if not pairs:
        return 0
    raw = session.connection().connection.driver_connection
    assert raw is not None
    tpl_rows, eids, tpls = _number_plans(pairs, lambda k, i, t: (k, i, *t))
    raw.execute(f"CREATE TEMP TABLE IF NOT EXISTS _plan_tpl (tpl INTEGER, ord INTEGER, {_TPL_COLS})")
    raw.execute("CREATE INDEX IF NOT EXISTS temp._plan_tpl_by_tpl ON _plan_tpl (tpl, ord)")  # the join's lookup
    raw.executemany(f"INSERT INTO temp._plan_tpl VALUES ({', '.join('?' * (len(_COLS) + 1))})", tpl_rows)
    before = raw.total_changes
    # In elder order, each elder's rows in plan order. (WHERE true: SQLite's parser needs it
    # between a SELECT's join and the upsert's ON CONFLICT.)
    raw.execute(f"INSERT INTO checkins ({', '.join(_COLS)}) "
                f"SELECT json_extract(x.value, '$[0]'), {', '.join('t.' + c for c in _COLS[1:])} "
                "FROM json_each(?) x JOIN temp._plan_tpl t ON t.tpl = json_extract(x.value, '$[1]') "
                "WHERE true ORDER BY x.key, t.ord ON CONFLICT (elder_id, slot) DO NOTHING",
                (json.dumps(list(zip(eids, tpls, strict=True)), separators=(",", ":")),))
    n = raw.total_changes - before
    raw.execute("DELETE FROM temp._plan_tpl")
    return int(n)


def _number_plans(pairs: list[tuple[int, _Tpl]], row: Callable[[int, int, Any], Any]
                  ) -> tuple[list[Any], list[int], list[int]]:
    """Number a batch's distinct class plans: (``row(plan number, position, encoded check-in)`` for
    each check-in of each plan once, the elder ids, each elder's plan number)."""
    numbers: dict[int, int] = {}
    rows: list[Any] = []
    eids: list[int] = []
    tpls: list[int] = []
    for eid, tpl in pairs:
        k = numbers.get(id(tpl))
        if k is None:
            k = numbers[id(tpl)] = len(numbers)
            rows.extend([row(k, i, t) for i, t in enumerate(tpl.params)])
        eids.append(eid)
        tpls.append(k)
    return rows, eids, tpls


def _write_checkins_pg(session: Session, pairs: list[tuple[int, _Tpl]], fresh: bool = False) -> int:
    """PostgreSQL: insert the check-ins of (elder id, class plan) pairs, skipping existing (elder, slot).

    A batch of 5000 elders uses a few hundred class plans: their rows go once into a temporary
    table (COPY), the elders as two integer arrays (elder id, plan number), and one INSERT … SELECT
    joins them. The server parses each plan's text (timestamps, JSON) once, not once per elder.

    ``fresh``: the slots are most likely all new (the batch's elders have no open or recent
    check-ins; or, re-planning, none of the calls read for reconciling has a planned slot). The
    rows then go in with a plain INSERT, which costs the server about a quarter less than ON
    CONFLICT's speculative insertion of every row. The unique key still decides: should a
    slot exist after all (an old cancelled call, another planner racing), the plain INSERT fails as
    a whole, is rolled back to its savepoint and the batch is written with ON CONFLICT DO NOTHING.
    """
    if not pairs:
        return 0
    raw = session.connection().connection.driver_connection
    assert raw is not None
    lines, eids, tpls = _number_plans(pairs, lambda k, i, t: f"{k}\t{i}\t{t}")
    cur = raw.cursor()
    cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS _plan_tpl ON COMMIT DELETE ROWS AS "
                f"SELECT 0 AS tpl, 0 AS ord, {_TPL_COLS} FROM checkins WITH NO DATA")
    with cur.copy(f"COPY _plan_tpl (tpl, ord, {_TPL_COLS}) FROM STDIN") as cp:
        cp.write("\n".join(lines) + "\n")
    # In elder order, each elder's rows in plan order (as the rows were written one by one before).
    insert = (f"INSERT INTO checkins ({', '.join(_COLS)}) "
              f"SELECT x.eid, {', '.join('t.' + c for c in _COLS[1:])} "
              "FROM unnest(%s::integer[], %s::integer[]) WITH ORDINALITY AS x(eid, tpl, n) "
              "JOIN _plan_tpl t ON t.tpl = x.tpl ORDER BY x.n, t.ord")
    n = None
    if fresh:
        cur.execute("SAVEPOINT plan_fresh")
        try:
            cur.execute(insert, (eids, tpls))
            n = cur.rowcount
            cur.execute("RELEASE SAVEPOINT plan_fresh")
        except psycopg.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT plan_fresh")
            log.info("planner: a fresh batch had existing slots; written again skipping them",
                     extra={"action": "plan_fresh_conflict"})
    if n is None:
        cur.execute(insert + " ON CONFLICT (elder_id, slot) DO NOTHING", (eids, tpls))
        n = cur.rowcount
    cur.execute("TRUNCATE _plan_tpl")
    return max(int(n or 0), 0)


def _pg_text(v: Any) -> str:
    if v is None:
        return "\\N"
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, list | dict):
        s = json.dumps(v, ensure_ascii=False)
    else:
        s = str(v.value if hasattr(v, "value") else v)
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _write_tasks(session: Session, rows: list[tuple[Any, ...]]) -> int:
    """Home-visit tasks, skipping (elder, month) pairs that exist; returns the number of new rows."""
    if not rows:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        cols = list(zip(*rows, strict=True))
        res = session.execute(text(
            f"INSERT INTO home_visit_tasks ({', '.join(_TASK_COLS)}) "
            "SELECT * FROM unnest(CAST(:a AS integer[]), CAST(:b AS varchar[]), CAST(:c AS timestamptz[]), "
            "CAST(:d AS varchar[]), CAST(:e AS timestamptz[]), CAST(:f AS timestamptz[])) "
            "ON CONFLICT (elder_id, month) DO NOTHING RETURNING 1"),
            {k: list(v) for k, v in zip("abcdef", cols, strict=True)})
        return len(res.all())
    stmt = sqlite.insert(HomeVisitTask).on_conflict_do_nothing(index_elements=["elder_id", "month"])
    raw = session.connection().connection.driver_connection
    assert raw is not None
    before = raw.total_changes
    session.connection().execute(stmt, [dict(zip(_TASK_COLS, r, strict=True)) for r in rows])
    return int(raw.total_changes - before)


# -- planning ------------------------------------------------------------------------------

def plan_range(
    sessions: sessionmaker[Session], start: datetime, end: datetime, now: datetime, policies: PolicySet, *,
    region_paths: list[str] | None = None, elder_ids: list[int] | None = None, batch: int = BATCH,
    dry_run: bool = False, sink: Callable[[PlannedCheckIn], None] | None = None, home_tasks: bool = True,
    reconcile_surge: bool = False, insert_until: datetime | None = None,
) -> PlanResult:
    """Plan ``[start, end)`` for active elders (optionally only some regions / ids).

    With ``reconcile_surge`` (re-planning after an event changed) open surge and routine
    check-ins in the range that the policy no longer wants are cancelled, and ones the planner
    itself cancelled earlier that are wanted again are revived (same (elder, slot) row). Every
    elder read is reconciled, also one the policy plans nothing for now (month's visit done,
    paused, consent withdrawn) or no longer active.
    With ``insert_until`` only check-ins due before it are written (and counted as planned); the
    whole range is still reconciled.
    """
    t0 = _time.perf_counter()
    result = PlanResult()
    with sessions() as s:
        events = load_events(s, start, end)
        dialect = s.get_bind().dialect.name
        if dialect == "postgresql":
            _ensure_statistics(s)
    cp = ClassPlanner(policies, start, end, now, events=events, dialect=dialect, home_tasks=home_tasks,
                      insert_until=insert_until)
    history_since = start - timedelta(days=62)
    want_plans = sink is not None or reconcile_surge
    # A re-plan reads elders of every status: one no longer active gets no calls, so its open
    # surge/routine calls in the range are cancelled (as for an active elder planned nothing).
    batches = _split_inactive(_raw_batches(sessions, region_paths=region_paths, elder_ids=elder_ids, batch=batch,
                                           history_since=history_since, any_status=reconcile_surge),
                              reconcile_surge)
    if dry_run:
        for rows, hist, _gone in batches:
            _out, _tasks, planned, pairs = cp.expand(rows, hist, want_plans)
            result.elders += len(rows)
            result.planned += planned
            if sink is not None:
                for p in _materialise(pairs):
                    sink(p)
        result.seconds = _time.perf_counter() - t0
        return result
    # Pipelined: writer threads write batch k (PostgreSQL: k and k+1) while this thread reads and
    # plans the next (the database releases the GIL while it works). A few batches in flight.
    # Re-plans reconcile a batch in the writer, in the same transaction as its insert, before it:
    # a revived row is then skipped by the insert.
    with _Writer(sessions, result, PG_WRITERS if dialect == "postgresql" else 1,
                 reconcile=(now, end) if reconcile_surge else None, pg=dialect == "postgresql") as writer:
        for rows, hist, gone in batches:
            out, tasks, planned, pairs = cp.expand(rows, hist, want_plans)
            result.elders += len(rows)
            result.planned += planned
            if sink is not None:
                for p in _materialise(pairs):
                    sink(p)
            if out or tasks or (reconcile_surge and (pairs or gone)):
                # No history at all (no open call, none completed lately): slots are new (a re-plan
                # decides in the writer, from the calls it reconciles).
                writer.put(out, tasks, pairs + gone if reconcile_surge else [], fresh=not hist)
    result.seconds = _time.perf_counter() - t0
    log.debug("planned with %d class plans", cp.builds, extra={"action": "plan_classes"})
    return result


_NO_PLAN = _Tpl([], [])
_STATS_TABLES = ["elders", "regions", "checkins"]


def _ensure_statistics(session: Session) -> None:
    """PostgreSQL: ANALYZE the tables the batch queries read when their statistics are missing or
    stale, by autovacuum's own rule (more than 50 + 10 % rows changed since the last ANALYZE).

    Without statistics (autovacuum off, a database just restored or bulk-loaded) the server
    guesses a few thousand elders and answers each batch's ``id > last ORDER BY id LIMIT n`` with a
    scan and sort of the whole table instead of the primary key: planning 10⁶ elders then costs
    200 such scans. Statistics taken while ``checkins`` was empty make it match every batch's ids
    against all open calls. ANALYZE samples at most 30,000 rows (well under a second); where
    autovacuum keeps up, the rule is never met here.
    """
    stale = session.execute(text(
        "SELECT c.relname FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
        "WHERE c.oid = ANY(CAST(:t AS regclass[])) "
        "AND (c.reltuples < 0 OR COALESCE(s.n_mod_since_analyze, 0) > 50 + 0.1 * c.reltuples)"),
        {"t": _STATS_TABLES}).scalars().all()
    for name in stale:
        session.execute(text(f'ANALYZE "{name}"'))
        log.info("table %s had no or stale statistics: analysed", name,
                 extra={"action": "plan_analyze", "table": name})
    if stale:
        session.commit()


def _split_inactive(batches: Iterator[tuple[list[Any], _Hist]], split: bool
                    ) -> Iterator[tuple[list[Any], _Hist, list[tuple[int, _Tpl]]]]:
    """Per batch: the active elders' rows, the history, and (with ``split``: rows read with
    ``any_status``) an empty plan for each elder no longer active."""
    active = ElderStatus.ACTIVE.value
    for rows, hist in batches:
        gone = [(r[0], _NO_PLAN) for r in rows if r[7] != active] if split else []
        yield ([r for r in rows if r[7] == active] if gone else rows), hist, gone


SQLITE_CACHE_KIB = 65536


def _big_cache(session: Session) -> None:
    """SQLite: a 64 MiB page cache on the planner's connection (bounded; the default 2 MiB makes
    index inserts for millions of rows re-read the same pages from the OS over and over)."""
    if session.get_bind().dialect.name == "sqlite":
        session.connection().exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")


PG_WRITERS = 2


class _Writer:
    """Background threads writing (check-ins, tasks) batches, each in its own transaction.

    SQLite has one writer (one write lock). PostgreSQL gets ``PG_WRITERS`` connections: the server
    spends most of a plan inserting (heap, three indexes, the elder foreign-key check per row), and
    batches cover disjoint elder-id ranges, so two backends insert in parallel without conflicts.
    """

    def __init__(self, sessions: sessionmaker[Session], result: PlanResult, threads: int = 1, *,
                 reconcile: tuple[datetime, datetime] | None = None, pg: bool = False) -> None:
        self.sessions, self.result, self.reconcile = sessions, result, reconcile
        self.pg = pg
        self.q: queue.Queue[tuple[list[Any], list[Any], list[tuple[int, _Tpl]], bool] | None] = queue.Queue(maxsize=threads)
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, name=f"planner-writer-{i}", daemon=True)
                        for i in range(threads)]

    def __enter__(self) -> _Writer:
        for t in self.threads:
            t.start()
        return self

    def _run(self) -> None:
        while (item := self.q.get()) is not None:
            if self.error is not None:
                continue  # drain after a failure
            try:
                c = r = 0
                with write_session(self.sessions) as s:
                    _big_cache(s)
                    fresh = item[3]
                    if self.reconcile is not None:
                        # No planned slot among the calls already there: write them as fresh.
                        c, r, found = _reconcile(s, item[2], *self.reconcile)
                        fresh = not found
                    n = _write_checkins_pg(s, item[0], fresh) if self.pg else _write_checkins_sqlite(s, item[0])
                    k = _write_tasks(s, item[1])
                with self.lock:
                    self.result.inserted += n
                    self.result.home_tasks += k
                    self.result.cancelled += c
                    self.result.revived += r
            except BaseException as exc:  # re-raised in the planning thread
                self.error = exc

    def put(self, out: list[Any], tasks: list[Any], pairs: list[tuple[int, _Tpl]], fresh: bool = False) -> None:
        if self.error is not None:
            raise self.error
        self.q.put((out, tasks, pairs, fresh))

    def __exit__(self, *exc: object) -> None:
        for _ in self.threads:
            self.q.put(None)
        for t in self.threads:
            t.join()
        if self.error is not None and exc[0] is None:
            raise self.error


_PLANNER = "planner"


def _reconcile(session: Session, pairs: list[tuple[int, _Tpl]], now: datetime, until: datetime
               ) -> tuple[int, int, bool]:
    """Bring existing surge/routine check-ins due in ``[now, until)`` in line with the new plans.

    Cancelled: open surge calls no longer wanted (event cancelled, ended or shrunk) and planned/due
    routine calls a surge schedule supersedes (a lockdown's doubled cadence, a surge call that day).
    Revived: rows the planner itself cancelled whose slot is wanted again (another event still
    covers the day), since the (elder, slot) key would make a fresh insert a no-op.
    Returns (cancelled, revived, whether any planned slot was among the calls read).
    """
    by_elder = dict(pairs)
    if not by_elder:
        return 0, 0, False
    conn = session.connection()
    raw = conn.connection.driver_connection
    assert raw is not None
    # On the driver cursor (a re-plan reads ~10⁵ rows here; no ORM row processing). On SQLite
    # ``+status`` keeps the planner off the status-led claim index (see _status_in).
    lite = conn.dialect.name == "sqlite"
    ph = "?" if lite else "%s"
    sql = ("SELECT id, elder_id, slot, kind, status FROM checkins "
           f"WHERE elder_id >= {ph} AND elder_id <= {ph} AND kind IN ('surge', 'routine') "
           f"AND {'+' if lite else ''}status IN ('planned', 'due', 'retry_wait', 'cancelled') "
           f"AND due_at >= {ph} AND due_at < {ph}")
    lo_t, hi_t = (_TRANS_ENC.at(now), _TRANS_ENC.at(until)) if lite else (now, until)
    cur = raw.cursor()
    cur.execute(sql, (min(by_elder), max(by_elder), lo_t, hi_t))
    stale: list[tuple[int, S]] = []
    dead: dict[int, PlannedCheckIn] = {}
    found = False
    for cid, eid, slot, kind, st in cur.fetchall():
        tpl = by_elder.get(eid)
        if tpl is None:
            continue  # not in this batch (another region between the ids)
        p = tpl.slots.get(slot)
        found = found or p is not None
        if st == "cancelled":
            if p is not None:
                dead[cid] = p if p.elder_id == eid else replace(p, elder_id=eid)
        elif p is None and (kind == "surge" or st != "retry_wait"):
            stale.append((cid, S(st)))
    cur.close()
    n_cancel = _cancel_stale(session, stale, now, "预警/封控开始、变更或解除，按新的探访频率调整")
    if not dead:
        return n_cancel, 0, found
    # Only the planner's own cancellations come back (a call staff cancelled stays cancelled).
    last_actor: dict[int, str] = {r[0]: r[1] for r in conn.execute(
        select(CheckInTransition.checkin_id, CheckInTransition.actor)
        .where(CheckInTransition.checkin_id.in_(list(dead)), CheckInTransition.to_status == S.CANCELLED)
        .order_by(CheckInTransition.id)
    )}
    trans = []
    for i, p in dead.items():
        if last_actor.get(i) != _PLANNER:
            continue
        to = S.DUE if p.due_at <= now else S.PLANNED
        res = conn.execute(
            update(CheckIn).where(CheckIn.id == i, CheckIn.status == S.CANCELLED)
            .values(status=to, priority=p.priority, due_at=p.due_at, next_attempt_at=p.due_at,
                    ignore_call_window=p.ignore_call_window, reasons=list(p.reasons), dialog_flags=p.dialog_flags,
                    attempts=0, lease_owner=None, lease_expires_at=None, outcome=None, completed_at=None,
                    version=CheckIn.version + 1, updated_at=now))
        if res.rowcount:
            trans.append({"checkin_id": i, "from_status": S.CANCELLED, "to_status": to, "at": now,
                          "actor": _PLANNER, "note": "仍有预警/封控需要此次探访，恢复"})
    _record_many(session, trans)
    return n_cancel, len(trans), found


_CLAIMABLE_SQL = "('planned', 'due', 'retry_wait')"


def _cancel_stale(session: Session, stale: list[tuple[int, S]], now: datetime, note: str) -> int:
    """Cancel the planner's superseded calls not yet being dialled (as ``queue.cancel``, with the
    transitions recorded), in bulk on the driver connection: a re-plan may cancel 10⁵ rows.

    SQLite: the re-plan holds the write lock since it read ``stale`` in this transaction, so the
    statuses read are current. PostgreSQL: rows a worker holds locked are skipped (as
    ``queue.cancel`` does), and the status each row had is taken under the row lock.
    """
    if not stale:
        return 0
    raw = session.connection().connection.driver_connection
    assert raw is not None
    at = _TRANS_ENC.at(now)
    note = note[:255]
    if session.get_bind().dialect.name == "postgresql":
        cur = raw.cursor()
        cur.execute(
            # (The ids as rows joined to the table: as an "id = ANY(array)" filter, with poor
            # estimates the server compared every open call with every id of the batch.)
            "WITH old AS (SELECT c.id, c.status FROM unnest(%s::integer[]) AS x(id) JOIN checkins c ON c.id = x.id "
            "WHERE c.status IN " + _CLAIMABLE_SQL + " FOR UPDATE OF c SKIP LOCKED), "
            "upd AS (UPDATE checkins c SET status = 'cancelled', version = c.version + 1, updated_at = %s "
            "FROM old WHERE c.id = old.id RETURNING c.id, old.status) "
            "INSERT INTO checkin_transitions (checkin_id, from_status, to_status, at, actor, note) "
            "SELECT id, status, 'cancelled', %s, %s, %s FROM upd",
            ([i for i, _ in stale], now, now, _PLANNER, note))
        return max(int(cur.rowcount or 0), 0)
    for _, st in stale:
        check_transition(st, S.CANCELLED)
    # One statement each, the ids as a JSON array (no statement or binding per row).
    before = raw.total_changes
    raw.execute("UPDATE checkins SET status = 'cancelled', version = version + 1, updated_at = ? "
                "WHERE id IN (SELECT value FROM json_each(?)) AND status IN " + _CLAIMABLE_SQL,
                (at, json.dumps([i for i, _ in stale])))
    n = raw.total_changes - before
    if n != len(stale):  # cannot happen under the write lock; refuse rather than mis-record
        raise RuntimeError(f"cancel: {n} of {len(stale)} rows changed")
    raw.execute("INSERT INTO checkin_transitions (checkin_id, from_status, to_status, at, actor, note) "
                "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), 'cancelled', ?, ?, ? "
                "FROM json_each(?) ORDER BY key", (at, _PLANNER, note, json.dumps([[i, st.value] for i, st in stale])))
    return n


class _TransitionEncoder:
    def __init__(self) -> None:
        dialect = sqlite.dialect()
        col = CheckInTransition.__table__.c.at
        self._at = col.type.dialect_impl(dialect).bind_processor(dialect)

    def at(self, v: datetime) -> Any:
        return self._at(v) if self._at is not None else v


_TRANS_ENC = _TransitionEncoder()


def promote_due(sessions: sessionmaker[Session], now: datetime, limit: int = 50000) -> int:
    """planned → due for items whose time has come (recorded as transitions)."""
    with write_session(sessions) as s:
        ids = [r.id for r in s.execute(
            select(CheckIn.id).where(CheckIn.status == S.PLANNED, CheckIn.next_attempt_at <= now).limit(limit))]
        if not ids:
            return 0
        ids = [r[0] for r in s.execute(
            update(CheckIn).where(CheckIn.id.in_(ids), CheckIn.status == S.PLANNED)
            .values(status=S.DUE, version=CheckIn.version + 1, updated_at=now).returning(CheckIn.id))]
        _record_many(s, [{"checkin_id": i, "from_status": S.PLANNED, "to_status": S.DUE, "at": now,
                          "actor": "planner", "note": None} for i in ids])
        return len(ids)


def tick(sessions: sessionmaker[Session], now: datetime, policies: PolicySet, *,
         horizon: timedelta = timedelta(hours=48), batch: int = BATCH) -> PlanResult:
    """One planner tick: plan ``[now, now + horizon)`` for everyone, then promote due items."""
    result = plan_range(sessions, now, now + horizon, now, policies, batch=batch)
    result.promoted = promote_due(sessions, now)
    log.info("plan tick: %s", result.summary(), extra={"action": "plan_tick"})
    return result


REPLAN_MAX = timedelta(days=62)


def _broadest(paths: list[str]) -> list[str]:
    """The distinct paths none of the others contains (a county's townships are under it already)."""
    kept: list[str] = []
    for p in sorted(set(paths), key=len):
        if not any(p.startswith(k + "/") for k in kept):
            kept.append(p)
    return sorted(kept)


def replan_event(sessions: sessionmaker[Session], event_id: int, now: datetime, policies: PolicySet, *,
                 horizon: timedelta = timedelta(hours=48), batch: int = BATCH,
                 until: datetime | None = None, previous_paths: Collection[str] = ()) -> PlanResult:
    """Re-plan the elders an event covers (after it was declared, updated, cancelled or ended).

    New calls are written only within the planner's rolling horizon ``[now, now + horizon)``, as
    the tick does; the tick plans the event's later days as they come into its horizon (it applies
    active events). Existing calls are reconciled from ``now`` to the latest of ``now + horizon``,
    the event's end and ``until`` (pass the event's *previous* end when it was shortened, so the
    calls planned beyond the new end are cancelled), at most 62 days: superseded routine and surge
    calls there are cancelled, planner-cancelled ones wanted again revived. So a 30-day lockdown
    costs two days of calls at once, not thirty.

    The elders re-planned are those under the event's regions and under ``previous_paths`` (pass
    the region paths the event — or the events a message replaced — covered before the change: an
    update covering fewer regions must release the dropped regions' elders too).
    """
    with sessions() as s:
        paths = list(s.scalars(select(Region.path).join(SurgeEventRegion, SurgeEventRegion.region_id == Region.id)
                               .where(SurgeEventRegion.event_id == event_id)))
        ev_end = s.scalar(select(SurgeEvent.ends_at).where(SurgeEvent.id == event_id))
    paths = _broadest([*paths, *previous_paths])
    if not paths:
        return PlanResult()
    end = max(now + horizon, *(t for t in (ev_end, until) if t is not None))
    end = min(end, now + max(REPLAN_MAX, horizon))
    result = plan_range(sessions, now, end, now, policies, region_paths=paths, batch=batch,
                        home_tasks=False, reconcile_surge=True, insert_until=now + horizon)
    log.info("re-planned for event %s: %s", event_id, result.summary(), extra={"action": "plan_event"})
    return result


__all__ = ["ClassPlanner", "PlanResult", "id_modulus", "iter_elder_batches", "load_events", "plan_range", "promote_due",
           "replan_event", "tick"]
