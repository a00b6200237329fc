#!/usr/bin/env bash
# Create (or reuse) a virtual environment with the project installed, fitted to the machine.
#
# Usage: bash scripts/setup_env.sh [--extras LIST] [VENV_DIR]
#   VENV_DIR        default: $R21D_VENV or ./.venv
#   --extras LIST   comma-separated extras of pyproject.toml to add (plots, test, ray, bench, docs);
#                   default: $R21D_EXTRAS, else none (what extracting features needs)
# Prints the environment's folder on stdout; what it does goes to stderr.
#
# torch: with a working NVIDIA GPU (nvidia-smi runs) pip's default index (the CUDA build on
# Linux); without one the CPU build from https://download.pytorch.org/whl/cpu (a few hundred MB
# instead of several GB of CUDA wheels). When that index cannot be reached the default index is
# used instead, with a warning. R21D_TORCH_INDEX overrides the choice: "cpu", "default" or an
# index URL (e.g. https://download.pytorch.org/whl/cu126); R21D_TORCH_CPU_INDEX names a mirror
# of the CPU index. torch is only installed when the environment has none: an existing torch
# is never replaced.
#
# Reruns are fast: a stamp file named after pyproject.toml's hash lists the extras installed;
# nothing is installed when it already covers what is asked for.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cpu_index="${R21D_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"  # a mirror may stand in

extras="${R21D_EXTRAS:-}"
venv=""
while [ $# -gt 0 ]; do
    case "$1" in
        --extras) extras="${2?--extras needs a comma-separated list, e.g. test,ray}"; shift 2 ;;
        --extras=*) extras="${1#--extras=}"; shift ;;
        -*) echo "setup_env.sh: unknown option $1 (usage: setup_env.sh [--extras LIST] [VENV_DIR])" >&2; exit 2 ;;
        *) venv="$1"; shift ;;
    esac
done
venv="${venv:-${R21D_VENV:-$root/.venv}}"
python="${PYTHON:-python3}"
say() { echo "setup_env: $*" >&2; }

# The extras asked for, one per line, sorted and unique.
wanted="$(tr ', ' '\n\n' <<<"$extras" | sed '/^$/d' | sort -u)"

stamp="$venv/.r21d-deps-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ -x "$venv/bin/python" ] && [ -e "$stamp" ] && [ -z "$(comm -23 <(echo "$wanted" | sed '/^$/d') <(sort -u "$stamp"))" ]; then
    echo "$venv"  # up to date: nothing to install
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    say "creating a virtual environment in $venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
fi

has_nvidia_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

# Where torch comes from ("" = pip's default index), and why.
case "${R21D_TORCH_INDEX:-auto}" in
    auto)
        if has_nvidia_gpu; then index=""; why="an NVIDIA GPU is present: the default (CUDA) build"
        else index="$cpu_index"; why="no NVIDIA GPU (nvidia-smi missing or failing): the CPU build"; fi ;;
    cpu) index="$cpu_index"; why="R21D_TORCH_INDEX=cpu: the CPU build" ;;
    default) index=""; why="R21D_TORCH_INDEX=default: pip's default index" ;;
    *) index="$R21D_TORCH_INDEX"; why="R21D_TORCH_INDEX=$R21D_TORCH_INDEX" ;;
esac

# A blocked index costs seconds: one request with a 5 s timeout before pip's long retries.
index_unreachable() {
    "$venv/bin/python" - "$1" <<'EOF'
import os, ssl, sys, urllib.request
url = sys.argv[1].rstrip("/") + "/torch/"
context = None
if url.startswith("https:"):
    cafile = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or None
    context = ssl.create_default_context(cafile=cafile if cafile and os.path.isfile(cafile) else None)
try:
    urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5, context=context).close()
except Exception as exc:  # DNS, refused, timeout, TLS, HTTP error: all mean "not usable"
    print(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")
else:
    sys.exit(1)
EOF
}

if "$venv/bin/python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is not None)'; then
    if [ -n "$index" ] && reason="$(index_unreachable "$index")"; then
        say "WARNING: the PyTorch index $index cannot be reached ($reason);" \
            "installing torch from pip's default index instead (on Linux the CUDA build, several GB)." \
            "For the CPU build later: $venv/bin/pip install --force-reinstall torch torchvision --index-url $cpu_index"
        index=""
        why="fallback: pip's default index"
    fi
    say "installing torch and torchvision ($why${index:+, from $index}); this takes a few minutes"
    "$venv/bin/python" -m pip install -q torch torchvision ${index:+--index-url "$index"} >&2
fi

# Extras installed before stay: the union is what the stamp records.
all_extras="$( { echo "$wanted"; if [ -e "$stamp" ]; then cat "$stamp"; fi; } | sed '/^$/d' | sort -u)"
spec="$root"
if [ -n "$all_extras" ]; then spec="$root[$(paste -sd, <<<"$all_extras")]"; fi
say "installing the project: pip install -e $spec"
"$venv/bin/python" -m pip install -q -e "$spec" >&2
rm -f "$venv"/.r21d-deps-*
echo "$all_extras" | sed '/^$/d' > "$stamp"
echo "$venv"
