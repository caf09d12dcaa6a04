#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: lint, types, tests, and a scan of the run's log
# for personal numbers. Usage: bash scripts/test.sh [pytest args]
# PostgreSQL tests run when TANFANG_TEST_DATABASE_URL is set (CI sets it); otherwise they are
# skipped with a visible reason. Every step runs; the exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
mkdir -p artifacts
failed=()
.venv/bin/ruff check . || failed+=(ruff)
.venv/bin/mypy || failed+=(mypy)
.venv/bin/pytest -p no:cacheprovider -ra --durations=25 -o log_file=artifacts/test-run.log -o log_file_level=DEBUG "$@"
rc=$?
# pytest's 5 means "no tests collected": that is a failure for us, not a pass.
((rc != 0)) && failed+=("pytest (exit $rc)")
# Last step: the whole run's log must not hold any of the sample ledger's ID or phone numbers.
.venv/bin/python scripts/check_logs.py artifacts/test-run.log || failed+=(log-scan)
if ((${#failed[@]})); then
  echo "失败的步骤：${failed[*]}" >&2
  exit 1
fi
echo "全部通过：ruff、mypy、pytest、日志扫描"
