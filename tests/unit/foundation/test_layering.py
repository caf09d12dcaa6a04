"""The one rule between the rooms: imports point down only (ARCHITECTURE.md)."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
OURS = {"tanfang", "storage", "scheduler", "dialogs", "ivr", "bot", "console"}
# package -> packages of ours it may import
ALLOWED = {
    "storage": {"storage"},
    "dialogs": {"dialogs", "storage.enums"},
    "scheduler": {"scheduler", "dialogs", "storage"},
    "ivr": {"ivr", "scheduler", "dialogs", "storage"},
    "bot": {"bot", "scheduler", "dialogs", "storage", "ivr.asr"},
    "console": {"console", "scheduler", "dialogs", "storage"},
    "tanfang": OURS,
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _allowed(name: str, allowed: set[str]) -> bool:
    return any(name == a or name.startswith(a + ".") for a in allowed)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_down(package: str) -> None:
    bad = []
    for path in sorted((REPO / package).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        for name in _imports(path):
            if name.split(".")[0] in OURS and not _allowed(name, ALLOWED[package]):
                bad.append(f"{path.relative_to(REPO)} imports {name}")
    assert not bad, "\n".join(bad)
