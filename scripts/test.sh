#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. Usage: bash scripts/test.sh [pytest args]
# PostgreSQL tests run when TANFANG_TEST_DATABASE_URL is set (CI sets it); otherwise they are
# skipped with a visible reason.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p artifacts
.venv/bin/ruff check .
.venv/bin/mypy
set +e
.venv/bin/pytest -p no:cacheprovider -ra -o log_file=artifacts/test-run.log -o log_file_level=DEBUG "$@"
rc=$?
# Last step: the whole run's log must not hold any of the sample ledger's ID or phone numbers.
.venv/bin/python scripts/check_logs.py artifacts/test-run.log || rc=${rc/#0/1}
set -e
# pytest's 5 means "no tests collected": that is a failure for us, not a pass.
exit $rc
