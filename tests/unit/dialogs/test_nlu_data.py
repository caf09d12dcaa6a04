"""nlu_data/ follows the Rasa 3.x NLU YAML schema and the intent contract in shared/intents.md."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from dialogs.nlu.data import TEST_FILE, is_held_out, load_examples, training_files
from dialogs.nlu.intents import INTENTS

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "nlu_data"
FILES = sorted(DATA.glob("*/*.yml"))
MINIMUM = {"zh": 40, "ko": 20}


def contract_intents() -> list[str]:
    text = (ROOT.parent / "shared" / "intents.md")
    if not text.exists():
        pytest.skip("shared/intents.md not in this checkout")
    return re.findall(r"^\| `([a-z_]+)` \|", text.read_text(encoding="utf-8"), flags=re.M)


def test_contract_matches_code():
    assert contract_intents() == list(INTENTS)


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_rasa3_schema(path: Path):
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert set(doc) == {"version", "nlu"}
    assert doc["version"] == "3.1"  # a string, as Rasa 3.x requires
    seen = []
    for item in doc["nlu"]:
        assert set(item) == {"intent", "examples"}, item
        assert isinstance(item["examples"], str)
        lines = [ln for ln in item["examples"].splitlines() if ln.strip()]
        assert all(ln.startswith("- ") for ln in lines), item["intent"]
        seen.append(item["intent"])
    assert seen == list(INTENTS), "every file lists exactly the contract intents, in order"


@pytest.mark.parametrize("locale", ["zh", "ko"])
def test_enough_varied_training_examples(locale: str):
    examples = [e for p in training_files(DATA / locale) for e in load_examples(p)]
    counts = Counter(e.intent for e in examples)
    assert all(counts[i] >= MINIMUM[locale] for i in INTENTS), counts
    texts = [e.text for e in examples]
    assert len(texts) == len(set(texts)), "duplicate training examples"


@pytest.mark.parametrize("locale", ["zh", "ko"])
def test_held_out_is_separate(locale: str):
    files = training_files(DATA / locale)
    held_out = sorted(p for p in (DATA / locale).glob("*.yml") if is_held_out(p))
    assert TEST_FILE in {p.name for p in held_out}
    assert not {p.name for p in held_out} & {p.name for p in files}
    train = {e.text.replace(" ", "") for p in files for e in load_examples(p)}
    assert len(load_examples(DATA / locale / TEST_FILE)) >= 8 * len(INTENTS)
    for path in held_out:
        test = [e.text.replace(" ", "") for e in load_examples(path)]
        overlap = [t for t in test if t in train]
        assert not overlap, f"{path.name} sentences copied into training: {overlap}"
