from __future__ import annotations

import pytest

from dialogs.script import SCRIPTS_DIR, ScriptError, parse_script


def source() -> str:
    return (SCRIPTS_DIR / "zh.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize(("old", "new", "key"), [
    ('  how_are_you:\n    text: "{salutation}，', '  how_are_you:\n    text: "{salutaton}，', "questions.how_are_you.text"),
    ('{"1": [fine, 挺好]', '{"1": [fien, 挺好]', "questions.how_are_you.keypad.1"),
    ('{"1": [fine, 挺好]', '{"0": [fine, 挺好]', "questions.how_are_you.keypad.0"),
    ('  closing: "', '  closnig: "', "messages.closing"),
    ("rate: 0.9,", "rate: fast,", "voice.rate"),
    ("locale: zh-CN", "locale: zh-TW", "locale"),
])
def test_bad_script_names_offending_key(old: str, new: str, key: str):
    src = source()
    assert old in src
    with pytest.raises(ScriptError, match=key.replace(".", r"\.")):
        parse_script(src.replace(old, new, 1), "zh.yaml")


def test_shipped_scripts_are_valid(scripts):
    assert {s.locale.nlu for s in scripts.values()} == {"zh", "ko"}
