#!/usr/bin/env bash
# Create (or reuse) a virtual environment with the project, its test tools and the ray extra installed.
# Usage: bash scripts/setup_env.sh [VENV_DIR]   (default: $R21D_VENV or ./.venv)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-${R21D_VENV:-$root/.venv}}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    echo "creating virtual environment in $venv" >&2
    "$python" -m venv "$venv"
fi
# Reinstall only when the dependency list changed.
stamp="$venv/.r21d-deps-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -e "$root[test,ray]"
    touch "$stamp"
fi
echo "$venv"
