"""Small pure keyword extractors: hazard and need kinds, callback times, wrong numbers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

HAZARD_KEYWORDS: dict[str, tuple[str, ...]] = {
    "heating": ("暖气", "暖器", "供暖", "冷", "凉", "난방", "보일러", "라지에타", "추워", "춥"),
    "stove": ("炉", "난로"),
    "kang": ("炕", "구들", "온돌"),
    "chimney": ("烟囱", "烟筒", "烟道", "倒烟", "굴뚝", "연통"),
    "co_gas": ("煤气", "燃气", "煤烟", "液化气", "漏气", "一氧化碳", "가스", "석탄 냄새", "연기"),
    "water": ("水管", "自来水", "水龙头", "漏水", "下水", "冻", "수도", "물이 새", "하수도"),
    "power": ("电", "跳闸", "灯", "插座", "전기", "정전", "전선"),
    "roof": ("房顶", "屋顶", "漏雨", "墙", "房子", "塌", "지붕"),
    "lock": ("锁", "门", "문"),
    "window": ("窗", "玻璃", "漏风", "창문"),
}
# Hazards that can poison or freeze someone: a P1 during a cold wave.
HEATING_OR_CO = frozenset({"heating", "stove", "kang", "chimney", "co_gas"})
KEYPAD_HAZARDS = {"heating": ("heating",), "utilities": ("water", "power", "co_gas"), "house": ("roof", "lock", "window")}

NEED_KEYWORDS: dict[str, tuple[str, ...]] = {
    "food": ("菜", "饭", "米", "面", "油", "吃的", "장", "쌀", "밥", "반찬", "식사"),
    "cleaning": ("收拾", "打扫", "洗衣", "被褥", "拆洗", "청소", "빨래"),
    "bathing": ("洗澡", "洗头", "목욕"),
    "escort": ("陪", "医院", "看病", "复查", "挂号", "병원", "동행"),
    "medicine": ("药", "약"),
    "repair": ("修", "坏了", "수리", "고쳐"),
    "fuel": ("煤", "柴", "석탄", "장작", "땔감"),
    "errand": ("交", "取", "充", "快递", "买", "사다"),
    "haircut": ("剃头", "理发", "머리"),
}
KEYPAD_NEEDS = {"food": ("food",), "care": ("cleaning", "bathing"), "escort": ("escort",), "repair": ("repair", "fuel")}


def kinds(text: str, table: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(k for k, words in table.items() if any(w in text for w in words))


def hazard_kinds(text: str) -> tuple[str, ...]:
    return kinds(text, HAZARD_KEYWORDS)


def need_kinds(text: str) -> tuple[str, ...]:
    return kinds(text, NEED_KEYWORDS)


_WRONG_NUMBER = re.compile(r"打错|没这人|没有这个人|没这个人|不认识|号码不对|不是这个号|找错|不姓|잘못|그런 (사람|분) 없")
_DECEASED = re.compile(r"去世|过世|不在了|走了好|没了|돌아가")
_HOSPITAL = re.compile(r"住院|医院|病了|不好|병원|입원|편찮")


def is_wrong_number(text: str) -> bool:
    return bool(_WRONG_NUMBER.search(text))


def reports_deceased(text: str) -> bool:
    return bool(_DECEASED.search(text))


def reports_unwell(text: str) -> bool:
    return bool(_HOSPITAL.search(text))


@dataclass(frozen=True, slots=True)
class CallbackRequest:
    """When to call again, as said ("明天上午") and as a relative hint for the scheduler."""

    text: str
    delay_minutes: int | None = None
    day_offset: int | None = None
    hour: int | None = None

    def resolve(self, now: datetime) -> datetime:
        """The callback time for ``now`` (aware, in the elder's time zone); default: 2 hours later."""
        if self.day_offset is not None or self.hour is not None:
            day = now + timedelta(days=self.day_offset or 0)
            hour = self.hour if self.hour is not None else 10
            at = day.replace(hour=hour, minute=0, second=0, microsecond=0)
            return at if at > now else at + timedelta(days=1)
        return now + timedelta(minutes=self.delay_minutes or 120)


_DAY = (("大后天", 3), ("后天", 2), ("明天", 1), ("明儿", 1), ("下礼拜", 7), ("下周", 7), ("改天", 1),
        ("모레", 2), ("내일", 1), ("다음 주", 7))
_HOUR = (("早上", 8), ("上午", 9), ("中午", 12), ("下午", 15), ("晚饭", 19), ("晚上", 19),
         ("아침", 9), ("점심", 12), ("오후", 15), ("저녁", 19))
_DELAY = (("半个钟头", 30), ("半小时", 30), ("俩小时", 120), ("两个小时", 120), ("一个钟头", 60),
          ("一会", 30), ("一回儿", 30), ("待会", 30), ("等会", 30), ("过会", 30), ("回头", 120), ("晚点", 120),
          ("한 시간", 60), ("이따", 30), ("조금", 30), ("나중", 120))


def callback_request(text: str) -> CallbackRequest | None:
    """A callback hint from ``text``, or ``None`` if it names no time at all."""
    day = next((d for w, d in _DAY if w in text), None)
    hour = next((h for w, h in _HOUR if w in text), None)
    delay = next((m for w, m in _DELAY if w in text), None)
    if day is None and hour is None and delay is None:
        return None
    if day is None and hour is not None:
        day = 0
    return CallbackRequest(text=text, delay_minutes=None if day is not None else delay, day_offset=day, hour=hour)
