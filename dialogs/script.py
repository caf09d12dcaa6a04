"""Conversation scripts as data (``dialogs/scripts/<locale>.yaml``), validated when loaded.

A bad script fails at load with :class:`ScriptError` naming the file and the offending key, so
a typo never surfaces in the middle of an elder's call.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import yaml

from dialogs.nlu.intents import INTENTS
from storage.enums import Locale

SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts"

QUESTIONS: tuple[str, ...] = (
    "identity", "how_are_you", "help_menu", "unwell_how_bad", "unwell_family", "hazard_what",
    "need_which", "winter_heating", "winter_stove", "winter_kang", "winter_chimney",
    "anything_else", "wrong_person_how", "wrong_person_when", "call_later_when", "stop_confirm",
)
MESSAGES: tuple[str, ...] = (
    "festival_greeting", "who_we_are", "reask_silence", "reask_unclear", "keypad_offer",
    "emergency", "transfer", "unwell_ack", "hazard_ack", "need_ack", "lonely_ack", "benefit_ack",
    "family_ack", "closing", "closing_no_response", "stop_ack", "call_later_ack",
    "wrong_number_ack", "wrong_person_ack", "max_turns",
)
# Keypad meanings that are not intents: menus and slot values.
KEYPAD_MEANINGS: frozenset[str] = frozenset(INTENTS) | {
    "help", "heating", "utilities", "house", "food", "care", "escort", "repair", "later_today", "tomorrow",
}
PLACEHOLDERS: frozenset[str] = frozenset({"salutation", "service_name", "hotline", "festival", "greeting"})
UNIVERSAL_DIGITS = ("0", "9")


class ScriptError(ValueError):
    """A script file is malformed; the message names the file and key."""


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    keypad: tuple[tuple[str, str, str], ...]  # (digit, meaning, label)

    def meaning(self, digit: str) -> str | None:
        for d, meaning, _ in self.keypad:
            if d == digit:
                return meaning
        return None


@dataclass(frozen=True, slots=True)
class Voice:
    rate: float
    volume: float
    slow_rate: float
    loud_volume: float


@dataclass(frozen=True, slots=True)
class KeypadStyle:
    spoken_item: str
    spoken_join: str
    spoken_prefix: str
    text_item: str
    text_join: str
    universal: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Script:
    locale: Locale
    voice: Voice
    listen_timeout_s: float
    keypad: KeypadStyle
    questions: Mapping[str, Question]
    messages: Mapping[str, str]
    source: str = ""


def _fields(template: str, where: str) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ScriptError(f"{where}：模板格式错误：{exc}") from exc


def _text(value: object, where: str, allowed: frozenset[str] = PLACEHOLDERS) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ScriptError(f"{where}：必须是非空文本")
    bad = _fields(value, where) - allowed
    if bad:
        raise ScriptError(f"{where}：未知占位符 {', '.join(sorted(bad))}（可用：{', '.join(sorted(allowed))}）")
    return value


def _number(value: object, where: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= float(value) <= hi:
        raise ScriptError(f"{where}：必须是 {lo} 到 {hi} 之间的数字，实际为 {value!r}")
    return float(value)


def _mapping(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ScriptError(f"{where}：缺少或不是映射")
    return {str(k): v for k, v in value.items()}


def parse_script(source: str, name: str = "<script>") -> Script:
    """Build and validate a :class:`Script` from YAML text."""
    try:
        doc = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise ScriptError(f"{name}：YAML 格式错误：{exc}") from exc
    root = _mapping(doc, name)
    try:
        locale = Locale(str(root.get("locale")))
    except ValueError as exc:
        raise ScriptError(f"{name}：locale 必须是 {', '.join(v.value for v in Locale)}") from exc
    v = _mapping(root.get("voice"), f"{name}：voice")
    voice = Voice(*(_number(v.get(k), f"{name}：voice.{k}", 0.3, 3.0)
                    for k in ("rate", "volume", "slow_rate", "loud_volume")))
    timeout = _number(root.get("listen_timeout_s"), f"{name}：listen_timeout_s", 1, 60)
    k = _mapping(root.get("keypad"), f"{name}：keypad")
    item_fields = frozenset({"label", "digit"})
    universal = _mapping(k.get("universal"), f"{name}：keypad.universal")
    if sorted(universal) != sorted(UNIVERSAL_DIGITS):
        raise ScriptError(f"{name}：keypad.universal 必须正好定义 0（转人工）和 9（重听）")
    style = KeypadStyle(
        spoken_item=_text(k.get("spoken_item"), f"{name}：keypad.spoken_item", item_fields),
        spoken_join=str(k.get("spoken_join", "，")),
        spoken_prefix=str(k.get("spoken_prefix", "")),
        text_item=_text(k.get("text_item"), f"{name}：keypad.text_item", item_fields),
        text_join=str(k.get("text_join", "\n")),
        universal=tuple((d, _text(lbl, f"{name}：keypad.universal.{d}")) for d, lbl in sorted(universal.items())),
    )
    qs = _mapping(root.get("questions"), f"{name}：questions")
    questions: dict[str, Question] = {}
    for key in QUESTIONS:
        where = f"{name}：questions.{key}"
        if key not in qs:
            raise ScriptError(f"{where}：缺少")
        q = _mapping(qs[key], where)
        keypad = _mapping(q.get("keypad"), f"{where}.keypad")
        items: list[tuple[str, str, str]] = []
        for digit, spec in keypad.items():
            kw = f"{where}.keypad.{digit}"
            if len(digit) != 1 or digit not in "12345678" :
                raise ScriptError(f"{kw}：按键必须是 1 到 8 之一（0 和 9 是通用键）")
            if not (isinstance(spec, list) and len(spec) == 2):
                raise ScriptError(f"{kw}：必须是 [含义, 标签]")
            meaning, label = str(spec[0]), spec[1]
            if meaning not in KEYPAD_MEANINGS:
                raise ScriptError(f"{kw}：未知含义 {meaning!r}")
            items.append((digit, meaning, _text(label, kw)))
        if not items:
            raise ScriptError(f"{where}.keypad：至少要有一个按键")
        questions[key] = Question(text=_text(q.get("text"), f"{where}.text"), keypad=tuple(sorted(items)))
    unknown = sorted(set(qs) - set(QUESTIONS))
    if unknown:
        raise ScriptError(f"{name}：questions.{unknown[0]}：未知问题（可用：{', '.join(QUESTIONS)}）")
    ms = _mapping(root.get("messages"), f"{name}：messages")
    messages: dict[str, str] = {}
    for key in MESSAGES:
        if key not in ms:
            raise ScriptError(f"{name}：messages.{key}：缺少")
        messages[key] = _text(ms[key], f"{name}：messages.{key}")
    unknown = sorted(set(ms) - set(MESSAGES))
    if unknown:
        raise ScriptError(f"{name}：messages.{unknown[0]}：未知消息")
    return Script(
        locale=locale, voice=voice, listen_timeout_s=timeout, keypad=style,
        questions=MappingProxyType(questions), messages=MappingProxyType(messages), source=name,
    )


def load_script(locale: Locale | str, directory: Path = SCRIPTS_DIR) -> Script:
    """Load ``<directory>/<zh|ko>.yaml`` (explicit file read; never at import)."""
    loc = Locale(locale) if not isinstance(locale, Locale) else locale
    path = directory / f"{loc.nlu}.yaml"
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ScriptError(f"找不到话术文件：{path}") from exc
    script = parse_script(source, str(path))
    if script.locale is not loc:
        raise ScriptError(f"{path}：locale 为 {script.locale.value}，应为 {loc.value}")
    return script


def load_scripts(directory: Path = SCRIPTS_DIR) -> dict[Locale, Script]:
    return {loc: load_script(loc, directory) for loc in Locale}
