"""``tanfang call SIP_URI [--locale zh|ko] [--json]``: one check-in call to any SIP URI (an operator
testing a trunk or a phone), through the same runner as the dialer; prints what happened.

Exit status 0 when the call was placed and finished, whatever its outcome; 3 when the telephone
parts cannot start (espeak-ng missing, bad model path, SIP port taken).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from tanfang.cli import CliError
from tanfang.settings import Settings

LOCALES = {"zh": "zh-CN", "ko": "ko"}


def register(sub: Any) -> None:
    p = sub.add_parser("call", help="拨打一个 SIP 地址，走一遍探访对话并输出结果")
    p.add_argument("uri", metavar="SIP_URI", help="例如 sip:1001@127.0.0.1:5080")
    p.add_argument("--locale", choices=sorted(LOCALES), default="zh", help="对话语言（默认 zh）")
    p.add_argument("--json", action="store_true", help="输出 JSON")
    p.add_argument("--salutation", default=None, help="称呼，例如 王奶奶（默认：您 / 어르신）")
    p.add_argument("--ring-timeout", type=float, default=None, help="振铃超时秒数")
    p.set_defaults(handler=_call)


def _call(args: argparse.Namespace, settings: Settings) -> int:
    if not args.uri.startswith(("sip:", "sips:")):
        raise CliError(f"SIP 地址必须以 sip: 开头：{args.uri}", 2)
    result = asyncio.run(_place(args, settings))
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(f"SIP 状态：{result['sip_status']}  结果：{result['result']}  结论：{result['outcome']}")
        for turn in result["transcript"]:
            who = "系统" if turn["who"] == "system" else "老人"
            print(f"  {who}：{turn['text']}")
        print(f"意图：{'、'.join(result['intents']) or '无'}  按键：{result['digits'] or '无'}")
        print(f"录音：{result['recording'] or '无'}")
    return 0


async def _place(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from dialogs.engine import DialogEngine
    from dialogs.result import DialogContext
    from dialogs.script import load_scripts
    from ivr.asr import AsrError
    from ivr.conversation import CheckInConversation
    from ivr.sip import UserAgent
    from ivr.tts import TtsError
    from storage.enums import Locale
    from tanfang import telephony
    from tanfang.nlu import build_intent_parser

    locale = Locale(LOCALES[args.locale])
    try:
        models = telephony.asr_models(settings)
    except AsrError as exc:
        raise CliError(str(exc), 3) from exc
    parser = await asyncio.to_thread(build_intent_parser, settings)
    ua = UserAgent(telephony.sip_config(settings, local_port=0))
    try:
        await ua.start()
    except OSError as exc:
        raise CliError(f"SIP 无法启动：{exc}", 3) from exc
    try:
        try:
            runner = telephony.runner(settings, ua, asr=models, parser=parser)
        except TtsError as exc:
            raise CliError(str(exc), 3) from exc
        if args.ring_timeout:
            from dataclasses import replace

            runner.config = replace(runner.config, ring_timeout_s=args.ring_timeout)
        salutation = args.salutation or ("어르신" if locale is Locale.KO else "您")
        ctx = DialogContext(locale=locale, salutation=salutation, hotline=settings.hotline,
                            service_name=settings.service_name)
        report = await runner.run(args.uri, CheckInConversation(DialogEngine(load_scripts()), ctx))
    finally:
        await ua.stop()
    return report.to_json()
