#!/usr/bin/env bash
# Set up the environment (if needed) with the test extras and run the default test suite.
# Extra arguments go to pytest. Two test processes run side by side (pytest-xdist: -n 2) unless
# the arguments say -n, R21D_TEST_PROCESSES says how many (0: one process), or the Ray tests are
# selected (-m ray, or -m '' for everything): those start one local Ray cluster at a time, and
# add the ray extra. R21D_EXTRAS=a,b adds more extras (CI: ray, for all of its runs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="test${R21D_EXTRAS:+,$R21D_EXTRAS}"
prev=""
ray=""
processes="-n ${R21D_TEST_PROCESSES:-2}"
for arg in "$@"; do
    if [ "$arg" = "-n" ] || [[ "$arg" == -n?* ]] || [[ "$arg" == --numprocesses* ]]; then processes=""; fi
    marks=""
    if [ "$prev" = "-m" ]; then marks="$arg"; elif [[ "$arg" == -m?* ]]; then marks="${arg#-m}"; fi
    if [ "$prev" = "-m" ] || [[ "$arg" == -m?* ]]; then
        # '' selects everything; "ray" selects the Ray tests unless it is "not ray"
        if [ -z "${marks// /}" ] || [[ "${marks//not ray/}" == *ray* ]]; then extras="$extras,ray"; ray=1; fi
    fi
    prev="$arg"
done
if [ -n "$ray" ]; then processes=""; fi
venv="$(bash "$root/scripts/setup_env.sh" --extras "$extras")"
cd "$root"
# shellcheck disable=SC2086 (processes is two words or none)
exec "$venv/bin/python" -m pytest $processes "$@"
