"""Closed sets of the domain, declared once. Pure: no third-party imports.

Values are stable ASCII codes (stored in the database); ``label`` gives the Chinese name shown
to people.
"""

from __future__ import annotations

import enum


class _Labelled(enum.StrEnum):
    """A StrEnum whose members carry a Chinese label as their second tuple item."""

    label: str

    def __new__(cls, value: str, label: str = "") -> _Labelled:
        obj = str.__new__(cls, value)
        obj._value_ = value
        obj.label = label or value
        return obj


class Category(_Labelled):
    """Target categories of the provincial policy (an elder can be in several)."""

    LIVING_ALONE = "living_alone", "独居"
    EMPTY_NEST = "empty_nest", "空巢"
    LEFT_BEHIND = "left_behind", "留守"
    DISABLED = "disabled", "失能"
    SEVERELY_DISABLED = "severely_disabled", "重残"
    BEREAVED_ONLY_CHILD = "bereaved_only_child", "计划生育特殊家庭"

    @property
    def bit(self) -> int:
        return _CATEGORY_BITS[self]


# Computed once: ``bit`` is on the hot path of every elder row read or written (CategorySet).
_CATEGORY_BITS: dict[Category, int] = {c: 1 << i for i, c in enumerate(Category)}


class Sex(_Labelled):
    MALE = "male", "男"
    FEMALE = "female", "女"


class Locale(_Labelled):
    ZH = "zh-CN", "普通话"
    KO = "ko", "朝鲜语"

    @property
    def nlu(self) -> str:
        """The folder name under nlu_data/ and dialogs/scripts/."""
        return "ko" if self is Locale.KO else "zh"


class RiskTier(_Labelled):
    GENERAL = "general", "一般"
    KEY = "key", "重点"
    HIGH = "high", "高风险"


class ElderStatus(_Labelled):
    ACTIVE = "active", "在册"
    INACTIVE = "inactive", "停止服务"
    DECEASED = "deceased", "已故"


class ConsentStatus(_Labelled):
    UNKNOWN = "unknown", "未确认"
    GRANTED = "granted", "已同意"
    WITHDRAWN = "withdrawn", "已撤回"


class PhoneKind(_Labelled):
    MOBILE = "mobile", "手机"
    LANDLINE = "landline", "座机"


class ContactKind(_Labelled):
    FAMILY = "family", "家属"
    NEIGHBOUR = "neighbour", "邻居"
    GRID_WORKER = "grid_worker", "网格员"
    OTHER = "other", "其他"


class RegionLevel(_Labelled):
    PROVINCE = "province", "省"
    CITY = "city", "市"
    COUNTY = "county", "县/区"
    TOWNSHIP = "township", "乡镇/街道"
    VILLAGE = "village", "村/社区"

    @property
    def depth(self) -> int:
        return list(RegionLevel).index(self)


class StaffRole(_Labelled):
    ADMIN = "admin", "管理员"
    COUNTY_OFFICER = "county_officer", "县级民政干部"
    TOWNSHIP_OFFICER = "township_officer", "乡镇民政干部"
    VISITOR = "visitor", "探访员"


class CheckInStatus(_Labelled):
    """Lifecycle of one planned check-in (one elder, one slot)."""

    PLANNED = "planned", "已计划"
    DUE = "due", "待拨打"
    DIALING = "dialing", "拨打中"
    RETRY_WAIT = "retry_wait", "等待重拨"
    DONE = "done", "已完成"
    UNREACHED = "unreached", "未联系上"
    CANCELLED = "cancelled", "已取消"


class Outcome(_Labelled):
    WELL = "well", "平安"
    NEEDS_FOLLOWUP = "needs_followup", "需跟进"
    EMERGENCY = "emergency", "紧急"
    UNREACHED = "unreached", "未联系上"
    REFUSED = "refused", "拒绝服务"
    WRONG_NUMBER = "wrong_number", "号码有误"
    DEFERRED = "deferred", "约定改时"


class Severity(_Labelled):
    """Escalation severity; ``ack_minutes`` is the acknowledgement deadline."""

    P1 = "P1", "紧急"
    P2 = "P2", "重要"
    P3 = "P3", "一般"

    @property
    def ack_minutes(self) -> int:
        return {"P1": 15, "P2": 24 * 60, "P3": 72 * 60}[self.value]


class EscalationStatus(_Labelled):
    OPEN = "open", "待处理"
    ACKNOWLEDGED = "acknowledged", "已认领"
    RESOLVED = "resolved", "已解决"


class EventKind(_Labelled):
    WEATHER = "weather", "极端天气"
    LOCKDOWN = "lockdown", "封控"
    FESTIVAL = "festival", "节日"


class VisitKind(_Labelled):
    HOME = "home", "上门探访"
    PHONE = "phone", "电话探访"
    REMOTE = "remote", "远程自动探访"
