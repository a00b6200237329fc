#!/usr/bin/env bash
# Quick start: set up the environment (only what extraction needs; the CPU build of torch
# without an NVIDIA GPU), then extract features of the sample videos with predictions.
# Extra arguments are passed to main.py (e.g. device=cpu, model_name=...).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$(bash "$root/scripts/setup_env.sh")"
cd "$root"
exec "$venv/bin/python" main.py feature_type=r21d file_with_video_paths=./sample/sample_video_paths.txt show_pred=true "$@"
