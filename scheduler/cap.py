"""CAP 1.2 (Common Alerting Protocol) alerts → weather surge events. Parsing only, no I/O.

The XML is parsed with the standard library after a first pass that refuses any DOCTYPE or
entity declaration (no entity expansion, no external entities).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import xml.parsers.expat
from dataclasses import dataclass, field
from datetime import datetime

NS = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}
LEVELS = {"红色": "red", "橙色": "orange", "黄色": "yellow", "蓝色": "blue"}
SEVERITY_LEVEL = {"Extreme": "red", "Severe": "orange", "Moderate": "yellow", "Minor": "blue"}
HAZARDS = [("寒潮", "cold_wave"), ("暴雪", "blizzard"), ("低温", "low_temperature"), ("霜冻", "frost"),
           ("道路结冰", "ice"), ("冰冻", "ice"), ("大风", "gale"), ("暴雨", "rainstorm"), ("高温", "heat")]
MAX_BYTES = 1_000_000


class CapError(ValueError):
    """The file is not a usable CAP 1.2 alert (message in Chinese)."""


@dataclass(frozen=True)
class CapArea:
    desc: str
    geocodes: tuple[str, ...]


@dataclass(frozen=True)
class CapAlert:
    identifier: str
    sender: str
    sent: datetime
    status: str  # Actual / Exercise / System / Test / Draft
    msg_type: str  # Alert / Update / Cancel / Ack / Error
    references: tuple[str, ...]  # identifiers referred to (Update / Cancel)
    event: str
    headline: str
    description: str
    severity: str
    urgency: str
    certainty: str
    level: str | None  # red / orange / yellow / blue
    hazard: str
    onset: datetime
    expires: datetime | None
    areas: tuple[CapArea, ...] = field(default_factory=tuple)

    @property
    def title(self) -> str:
        from scheduler.policy import HAZARD_LABELS, LEVEL_LABELS

        return f"{HAZARD_LABELS.get(self.hazard, self.event)}{LEVEL_LABELS.get(self.level or '', '')}预警"

    @property
    def actionable(self) -> bool:
        """Real alerts that are happening or expected (not tests, not past, not unlikely)."""
        return (self.status == "Actual" and self.urgency not in ("Past",) and self.certainty not in ("Unlikely",))


def _refuse_dtd(data: bytes) -> None:
    p = xml.parsers.expat.ParserCreate()

    def no_dtd(*_a: object) -> None:
        raise CapError("拒绝含 DOCTYPE/实体声明的 XML（防止实体膨胀攻击）")

    p.StartDoctypeDeclHandler = no_dtd
    p.EntityDeclHandler = no_dtd
    p.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    try:
        p.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise CapError(f"XML 格式错误：{exc}") from exc


def _time(text: str | None, what: str) -> datetime:
    if not text:
        raise CapError(f"缺少 {what}")
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise CapError(f"{what} 时间格式错误：{text!r}") from exc
    if t.tzinfo is None:
        raise CapError(f"{what} 缺少时区：{text!r}")
    return t


def parse_cap(data: bytes) -> CapAlert:
    if len(data) > MAX_BYTES:
        raise CapError("文件过大，不像预警消息")
    _refuse_dtd(data)
    root = ET.fromstring(data)  # noqa: S314 - DOCTYPE/entities refused above
    if root.tag != "{urn:oasis:names:tc:emergency:cap:1.2}alert":
        raise CapError("不是 CAP 1.2 预警（根元素应为 urn:oasis:names:tc:emergency:cap:1.2 的 alert）")

    def t(el: ET.Element, name: str) -> str:
        found = el.find(f"cap:{name}", NS)
        return (found.text or "").strip() if found is not None and found.text else ""

    identifier = t(root, "identifier")
    if not identifier:
        raise CapError("缺少 identifier")
    msg_type = t(root, "msgType")
    if msg_type not in ("Alert", "Update", "Cancel", "Ack", "Error"):
        raise CapError(f"msgType 无效：{msg_type!r}")
    sent = _time(t(root, "sent"), "sent")
    refs = tuple(part.split(",")[1] for part in t(root, "references").split() if part.count(",") >= 2)
    info = root.find("cap:info", NS)
    if info is None:
        if msg_type == "Cancel":
            return CapAlert(identifier, t(root, "sender"), sent, t(root, "status"), msg_type, refs, "", "", "",
                            "", "", "", None, "other", sent, None, ())
        raise CapError("缺少 info")
    event, headline = t(info, "event"), t(info, "headline")
    text = f"{event} {headline}"
    level = (next((v for k, v in LEVELS.items() if k in event), None)
             or next((v for k, v in LEVELS.items() if k in headline), None) or SEVERITY_LEVEL.get(t(info, "severity")))
    hazard = next((v for k, v in HAZARDS if k in text), "other")
    onset_text = t(info, "onset") or t(info, "effective")
    onset = _time(onset_text, "onset") if onset_text else sent
    expires = _time(t(info, "expires"), "expires") if t(info, "expires") else None
    areas = []
    for a in info.findall("cap:area", NS):
        codes = tuple(v.text.strip() for g in a.findall("cap:geocode", NS)
                      for v in g.findall("cap:value", NS) if v.text)
        areas.append(CapArea(t(a, "areaDesc"), codes))
    return CapAlert(identifier, t(root, "sender"), sent, t(root, "status"), msg_type, refs, event, headline,
                    t(info, "description"), t(info, "severity"), t(info, "urgency"), t(info, "certainty"),
                    level, hazard, onset, expires, tuple(areas))


def area_names(area: CapArea) -> list[str]:
    return [n for n in re.split(r"[、,，;；\s]+", area.desc) if n]


def geocode_candidates(code: str) -> list[str]:
    """A 12-digit statistical code (230183000000) also matches its 6/9-digit prefix (230183)."""
    code = code.strip()
    out = [code]
    stripped = code.rstrip("0")
    for n in (2, 4, 6, 9, 12):
        if len(stripped) <= n <= len(code):
            out.append(code[:n])
    return list(dict.fromkeys(out))
