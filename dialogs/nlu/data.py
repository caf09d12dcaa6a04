"""Training and evaluation examples: Rasa 3.x NLU YAML or ``label<TAB>text`` lines.

Loading is explicit (never at import). Every error names the file and the offending entry.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from dialogs.nlu.intents import INTENTS

TEST_FILE = "test.yml"
HELD_OUT_PREFIX = "test"  # test.yml, test2.yml, ...: held-out evaluation files training never reads


def is_held_out(path: Path) -> bool:
    """Whether ``path`` is a held-out evaluation file (its name starts with ``test``)."""
    return path.name.startswith(HELD_OUT_PREFIX)
_ENTITY = re.compile(r"\[([^\]]+)\]\([^)]*\)|\[([^\]]+)\]\{[^}]*\}")


class DataError(ValueError):
    """Bad training/evaluation data; the message (Chinese) names the file and entry."""


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    intent: str


def _strip_entities(text: str) -> str:
    return _ENTITY.sub(lambda m: m.group(1) or m.group(2), text)


def parse_rasa_yaml(source: str, name: str = "<yaml>") -> list[Example]:
    """Examples from Rasa 3.x NLU YAML text (``version``, ``nlu: - intent: / examples: |``)."""
    try:
        doc = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise DataError(f"{name}：YAML 格式错误：{exc}") from exc
    if not isinstance(doc, dict):
        raise DataError(f"{name}：顶层必须是映射（version / nlu）")
    version = doc.get("version")
    if version is not None and not (isinstance(version, str) and version.startswith("3.")):
        raise DataError(f"{name}：version 必须是 \"3.x\" 字符串，实际为 {version!r}")
    items = doc.get("nlu")
    if not isinstance(items, list):
        raise DataError(f"{name}：缺少 nlu 列表")
    out: list[Example] = []
    for i, item in enumerate(items):
        where = f"{name}：nlu[{i}]"
        if not isinstance(item, dict):
            raise DataError(f"{where} 必须是映射")
        if "intent" not in item:
            if any(k in item for k in ("synonym", "regex", "lookup")):
                continue  # other Rasa NLU item kinds carry no intent examples
            raise DataError(f"{where} 缺少 intent")
        label = item["intent"]
        examples = item.get("examples")
        if not isinstance(label, str) or not label:
            raise DataError(f"{where}.intent 必须是非空字符串")
        if not isinstance(examples, str):
            raise DataError(f"{where}（{label}）.examples 必须是以 “- ” 开头的多行文本")
        for j, line in enumerate(examples.splitlines()):
            stripped = line.strip()
            if not stripped:
                continue
            if not stripped.startswith("- "):
                raise DataError(f"{where}（{label}）第 {j + 1} 行必须以 “- ” 开头：{stripped!r}")
            text = _strip_entities(stripped[2:].strip())
            if text:
                out.append(Example(text=text, intent=label))
    return out


def parse_tsv(source: str, name: str = "<tsv>") -> list[Example]:
    """Examples from ``label<TAB>text`` lines; blank lines and ``#`` comments are skipped."""
    out: list[Example] = []
    for n, line in enumerate(source.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "\t" not in line:
            raise DataError(f"{name} 第 {n} 行缺少制表符（格式：意图<TAB>文本）")
        label, text = line.split("\t", 1)
        if not label.strip() or not text.strip():
            raise DataError(f"{name} 第 {n} 行意图或文本为空")
        out.append(Example(text=text.strip(), intent=label.strip()))
    return out


def load_examples(path: Path) -> list[Example]:
    """Examples from one file: ``.yml``/``.yaml`` as Rasa YAML, anything else as TSV."""
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(f"找不到文件：{path}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} 不是 UTF-8 编码") from exc
    if path.suffix.lower() in (".yml", ".yaml"):
        return parse_rasa_yaml(source, str(path))
    return parse_tsv(source, str(path))


def check_labels(examples: Iterable[Example], name: str, allowed: Sequence[str] = INTENTS) -> None:
    """Raise :class:`DataError` naming every label outside the contract."""
    unknown = sorted({e.intent for e in examples if e.intent not in allowed})
    if unknown:
        raise DataError(f"{name}：未知意图 {', '.join(unknown)}（合同见 shared/intents.md）")


def training_files(locale_dir: Path) -> list[Path]:
    """The training files of one locale folder: every ``*.yml`` except the held-out ``test*`` files."""
    files = sorted(p for p in locale_dir.glob("*.y*ml") if not is_held_out(p))
    if not files:
        raise DataError(f"{locale_dir} 下没有训练数据（*.yml）")
    return files


def load_training(locale_dir: Path) -> list[Example]:
    examples: list[Example] = []
    for path in training_files(locale_dir):
        examples.extend(load_examples(path))
    check_labels(examples, str(locale_dir))
    missing = sorted(set(INTENTS) - {e.intent for e in examples})
    if missing:
        raise DataError(f"{locale_dir}：缺少意图 {', '.join(missing)} 的训练样例")
    return examples


def data_hash(examples: Sequence[Example], config: str = "") -> str:
    """Stable hash of the training data (order-independent) and the model configuration."""
    h = hashlib.sha256(config.encode("utf-8"))
    for line in sorted(f"{e.intent}\t{e.text}" for e in examples):
        h.update(line.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]
