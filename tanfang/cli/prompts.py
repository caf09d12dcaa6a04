"""``tanfang prompts render [--locale zh|ko]``: pre-render every Say prompt of the dialog scripts;
``tanfang prompts say TEXT --locale ko --out x.wav``: one utterance as an 8 kHz WAV (test elders).

Prompts are read from ``dialogs/scripts/<locale>.yaml`` by :func:`script_prompts`, which collects
every ``Say`` it finds (a mapping with ``say: text`` or ``say: {text, rate, volume}``, or
``{action|type|kind: say, text, rate, volume}``), so it follows the dialogs format without importing
its engine. Once dialogs exposes a loader, point :data:`PROMPT_SOURCE` at it.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from ivr.tts import PromptCache, PromptSpec, TtsError, speech_wav
from storage.enums import Locale
from tanfang.cli import CliError
from tanfang.settings import Settings

SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "dialogs" / "scripts"
LOCALES = {"zh": Locale.ZH, "ko": Locale.KO}


def _says(node: Any) -> Iterator[tuple[str, int | None, float | None]]:
    if isinstance(node, dict):
        kind = next((str(node[k]).lower() for k in ("action", "type", "kind") if k in node), None)
        if kind == "say" and isinstance(node.get("text"), str):
            yield node["text"], node.get("rate"), node.get("volume")
        say = node.get("say")
        if isinstance(say, str):
            yield say, node.get("rate"), node.get("volume")
        elif isinstance(say, dict) and isinstance(say.get("text"), str):
            yield say["text"], say.get("rate"), say.get("volume")
        for value in node.values():
            yield from _says(value)
    elif isinstance(node, list):
        for item in node:
            yield from _says(item)


def script_prompts(locale: Locale, scripts_dir: Path = SCRIPTS_DIR) -> list[PromptSpec]:
    """Every Say of the locale's script (normal and the slower/louder "repeat" variant)."""
    path = scripts_dir / f"{locale.nlu}.yaml"
    if not path.is_file():
        raise CliError(f"找不到对话脚本：{path}", 2)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CliError(f"对话脚本格式错误：{path}：{exc}", 2) from exc
    specs: list[PromptSpec] = []
    for text, rate, volume in _says(data):
        if not text.strip() or "{" in text:  # templated texts are rendered at call time
            continue
        r = int(rate) if isinstance(rate, int | float) else None
        v = float(volume) if isinstance(volume, int | float) else None
        specs += [PromptSpec(text, locale, r, v), PromptSpec(text, locale, r, v, repeat=True)]
    return list(dict.fromkeys(specs))


PROMPT_SOURCE: Callable[[Locale, Path], list[PromptSpec]] = script_prompts


def _cache(settings: Settings) -> PromptCache:
    cache = PromptCache(settings.prompts_dir, default_rate=settings.tts_rate)
    try:
        cache.check()
    except TtsError as exc:
        raise CliError(str(exc), 3) from exc
    return cache


def _render(args: argparse.Namespace, settings: Settings) -> int:
    cache = _cache(settings)
    locales = [LOCALES[args.locale]] if args.locale else list(LOCALES.values())
    for loc in locales:
        prompts = PROMPT_SOURCE(loc, Path(args.scripts_dir))
        try:
            stats = asyncio.run(cache.render_all(prompts))
        except TtsError as exc:
            raise CliError(str(exc), 3) from exc
        print(
            f"{loc.label}：{len(prompts)} 条提示语，新合成 {stats.rendered} 条，已缓存 {stats.cached} 条，"
            f"共 {stats.seconds_of_audio:.1f} 秒 → {settings.prompts_dir}"
        )
    return 0


def _say(args: argparse.Namespace, settings: Settings) -> int:
    try:
        path = speech_wav(args.text, LOCALES[args.locale], Path(args.out), rate=args.rate, cache=_cache(settings))
    except TtsError as exc:
        raise CliError(str(exc), 3) from exc
    print(f"已写入 {path}（8 kHz 单声道 16 位）")
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser("prompts", help="语音提示：预先合成对话脚本里的全部提示语")
    psub = parser.add_subparsers(dest="prompts_command", metavar="ACTION", required=True)
    render = psub.add_parser("render", help="合成并缓存全部提示语")
    render.add_argument("--locale", choices=sorted(LOCALES), help="只合成这一种语言（默认全部）")
    render.add_argument("--scripts-dir", default=str(SCRIPTS_DIR), help="对话脚本文件夹")
    render.set_defaults(handler=_render)
    say = psub.add_parser("say", help="把一句话合成为 8 kHz WAV 文件（测试用的老人应答）")
    say.add_argument("text")
    say.add_argument("--locale", choices=sorted(LOCALES), default="ko")
    say.add_argument("--out", required=True, help="WAV 文件路径")
    say.add_argument("--rate", type=int, default=150, help="语速（每分钟词数）")
    say.set_defaults(handler=_say)
