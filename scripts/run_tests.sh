#!/usr/bin/env bash
# Set up the environment (if needed) and run the default test suite. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$(bash "$root/scripts/setup_env.sh")"
cd "$root"
exec "$venv/bin/python" -m pytest "$@"
