"""``tanfang nlu``: train, parse and evaluate the check-in intent classifier."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dialogs.nlu.intents import IntentParser
from tanfang.cli import CliError
from tanfang.settings import Settings

_LOCALES = ("zh", "ko")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("nlu", help="意图识别：训练、解析、评估")
    nlu_sub = parser.add_subparsers(dest="nlu_command", metavar="ACTION", required=True)

    p = nlu_sub.add_parser("train", help="训练意图模型（数据未变时使用缓存）")
    p.add_argument("--locale", choices=_LOCALES, help="只训练这一种语言（默认全部）")
    p.add_argument("--force", action="store_true", help="忽略缓存，重新训练")
    p.set_defaults(handler=cmd_train)

    p = nlu_sub.add_parser("parse", help="识别一句话的意图（JSON 输出）")
    p.add_argument("text")
    p.add_argument("--locale", choices=_LOCALES, default="zh")
    p.set_defaults(handler=cmd_parse)

    p = nlu_sub.add_parser("evaluate", help="在标注数据上评估（Rasa YAML 或 意图<TAB>文本）")
    p.add_argument("file", type=Path)
    p.add_argument("--locale", choices=_LOCALES, default="zh")
    p.add_argument("--json", action="store_true", help="以 JSON 输出指标")
    p.set_defaults(handler=cmd_evaluate)


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from dialogs.nlu import DataError
    from tanfang.nlu import load_or_train, model_path, nlu_data_dir

    for loc in [args.locale] if args.locale else list(_LOCALES):
        t0 = time.perf_counter()
        try:
            model, trained = load_or_train(loc, nlu_data_dir(settings), settings.models_dir, force=args.force)
        except DataError as exc:
            raise CliError(str(exc)) from exc
        path = model_path(settings.models_dir, loc, model.data_hash)
        state = "已训练" if trained else "数据未变，使用缓存"
        print(f"{loc}：{state}，{len(model.vocabulary)} 个特征，"
              f"{time.perf_counter() - t0:.2f} 秒 → {path}")
    return 0


def _parser(settings: Settings, locale: str) -> IntentParser:
    from dialogs.nlu import DataError
    from tanfang.nlu import RasaParser, build_local_parser

    try:
        local = build_local_parser(settings, (locale,))
    except DataError as exc:
        raise CliError(str(exc)) from exc
    if settings.nlu_backend == "rasa":
        return RasaParser(settings.rasa_url, settings.nlu_threshold, fallback=local)
    return local


def cmd_parse(args: argparse.Namespace, settings: Settings) -> int:
    from dialogs.nlu import normalise

    intent = _parser(settings, args.locale).parse(args.text, args.locale)
    out = {"text": args.text, "normalised": normalise(args.text, args.locale), **intent.to_dict()}
    print(json.dumps(out, ensure_ascii=False, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from dialogs.nlu import DataError, evaluate, load_examples
    from dialogs.nlu.data import check_labels

    try:
        examples = load_examples(args.file)
        check_labels(examples, str(args.file))
    except DataError as exc:
        raise CliError(str(exc)) from exc
    if not examples:
        raise CliError(f"{args.file} 中没有样例")
    report = evaluate(_parser(settings, args.locale), examples, args.locale)
    if args.json:
        d = report.to_dict()
        print(json.dumps({k: d[k] for k in ("accuracy", "macro_f1", "emergency_recall",
                                            "false_emergency_rate", "per_intent", "n", "confused_pairs")},
                         ensure_ascii=False, indent=2))
        return 0
    print(f"样例数 {report.n}")
    print(f"准确率 accuracy      {report.accuracy:.3f}")
    print(f"宏平均 macro-F1      {report.macro_f1:.3f}")
    print(f"紧急召回 emergency   {report.emergency_recall:.3f}")
    print(f"误报紧急 false-em.   {report.false_emergency_rate:.3f}")
    print()
    print(f"{'意图':<18}{'精确率':>8}{'召回率':>8}{'F1':>8}{'样例':>6}")
    for name, s in report.per_intent.items():
        print(f"{name:<20}{s.precision:>8.3f}{s.recall:>8.3f}{s.f1:>8.3f}{s.support:>6}")
    if report.confused_pairs:
        print("\n最常混淆（标注 → 识别：次数）")
        for gold, pred, count in report.confused_pairs:
            print(f"  {gold} → {pred}：{count}")
    return 0
