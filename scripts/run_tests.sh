#!/usr/bin/env bash
# Set up the environment (if needed) with the test extras and run the default test suite.
# Extra arguments go to pytest. Selecting the Ray tests (-m ray, or -m '' for everything) adds
# the ray extra; R21D_EXTRAS=a,b adds more (CI: ray, for both of its runs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="test${R21D_EXTRAS:+,$R21D_EXTRAS}"
prev=""
for arg in "$@"; do
    marks=""
    if [ "$prev" = "-m" ]; then marks="$arg"; elif [[ "$arg" == -m?* ]]; then marks="${arg#-m}"; fi
    if [ "$prev" = "-m" ] || [[ "$arg" == -m?* ]]; then
        # '' selects everything; "ray" selects the Ray tests unless it is "not ray"
        if [ -z "${marks// /}" ] || [[ "${marks//not ray/}" == *ray* ]]; then extras="$extras,ray"; fi
    fi
    prev="$arg"
done
venv="$(bash "$root/scripts/setup_env.sh" --extras "$extras")"
cd "$root"
exec "$venv/bin/python" -m pytest "$@"
