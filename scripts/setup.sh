#!/usr/bin/env bash
# Set up Tanfang on a Debian machine: system packages (apt), a virtual environment, pip packages.
# Idempotent and quick when everything is already there. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3 python3-venv python3-dev gcc espeak-ng sox libsox-fmt-all baresip kamailio chromium fonts-noto-cjk)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "==> 安装系统软件包：${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "需要 Python 3.11 或更新版本（当前：$($PY --version 2>&1)）" >&2
  exit 1
fi
if [[ ! -x .venv/bin/python ]]; then
  echo "==> 创建虚拟环境 .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.tanfang-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  echo "==> 安装 Python 依赖"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  touch "$stamp"
fi
echo "==> 环境就绪（.venv）"
