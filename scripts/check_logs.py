"""Grep test-run logs for the sample ledger's personal numbers (and a secret key, if given).

Usage: python scripts/check_logs.py [LOG_FILE_OR_DIR ...]  (default: artifacts/)
Exit 1 and name file and line (numbers masked in the report) when any is found.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "samples" / "ledger_sample_gbk.csv"


def sample_numbers() -> set[str]:
    """Every ID number and phone number of the sample ledger, as written and as plain digits."""
    with SAMPLE.open(encoding="gbk", newline="") as f:
        rows = list(csv.reader(f))[2:]
    out: set[str] = set()
    for r in rows:
        out.add(r[3])
        for cell in (r[5], r[13]):
            for p in cell.split("、"):
                if p:
                    out.update({p, p.replace("-", "")})
    return {n for n in out if len(n) >= 7}


def scan(paths: list[Path], secrets: set[str]) -> list[str]:
    hits = []
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*.log")))]
    for f in files:
        with f.open(encoding="utf-8", errors="replace") as fh:
            for i, line in enumerate(fh, 1):
                for s in secrets:
                    if s in line:
                        hits.append(f"{f}:{i}: {s[:4]}…{s[-2:]} in: {line.strip()[:160].replace(s, '<HIT>')}")
    return hits


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or [REPO / "artifacts"]
    secrets = sample_numbers()
    key = os.environ.get("TANFANG_SECRET_KEY")
    if key:
        secrets.add(key)
    hits = scan(paths, secrets)
    for h in hits[:50]:
        print(h)
    if hits:
        print(f"日志中发现 {len(hits)} 处样例台账的证件号/电话（或密钥）明文", file=sys.stderr)
        return 1
    print(f"日志检查通过：{len(secrets)} 个样例号码均未以明文出现在日志中")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
