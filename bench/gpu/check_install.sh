#!/usr/bin/env bash
# The GPU check's install step (and, unless --install-only, its CPU-sized run) here, in a stand-in for the GPU
# machine's Python, with the network off.
#
#   bash bench/gpu/check_install.sh [--bundle gpu-bundle] [--out bench/results/gpu_check_local] [--install-only] [--sim DIR]
#
# 1. bench/gpu/sim_env.py builds DIR (default /tmp/fastxfer-gpu-sim): a venv that sees only the GPU machine's
#    packages of .venv (torch, timm, transformers, accelerate, pandas, ...), and checks that fastai, fastcore,
#    fastprogress, gradio, fastapi, uvicorn, the weight packages and fastxfer itself do not import there.
# 2. bench/gpu/run.sh BUNDLE OUT --small with that venv's python, inside `unshare -n` (a network namespace with
#    no interfaces: pip cannot reach any index) when unshare works here; otherwise it says so and runs with
#    pip's --no-index alone.
# 3. When a Python 3.12 is here (`$PY312`, default python3.12, or pyenv's), the same install with its own pip (network off),
#    and every installed module byte-compiled by 3.12: the GPU machine's Python version, without torch.
# Builds nothing else: run `make gpu-bundle` first. Exit status: run.sh's, else the 3.12 check's.
set -u
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUNDLE=$REPO/gpu-bundle; OUT=$REPO/bench/results/gpu_check_local; SIM=/tmp/fastxfer-gpu-sim; MODE=(--small)
VENV_PY=${VENV_PY:-$REPO/.venv/bin/python}
[ -x "$VENV_PY" ] || VENV_PY=$(command -v python3)
while [ $# -gt 0 ]; do
  case $1 in
    --bundle) BUNDLE=$2; shift;; --out) OUT=$2; shift;; --sim) SIM=$2; shift;;
    --install-only) MODE=(--install-only);;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac; shift
done
[ -f "$BUNDLE/BUNDLE.json" ] || { echo "error: no bundle at $BUNDLE: run make gpu-bundle" >&2; exit 2; }
"$VENV_PY" "$REPO/bench/gpu/sim_env.py" "$SIM" || exit $?
NET=(unshare -n)
if ! unshare -n true 2>/dev/null; then
  echo "note: unshare -n does not work here (not root?); running with pip --no-index only, the network is not cut" >&2; NET=()
fi
echo "running: ${NET[*]} env PYTHON=$SIM/bin/python bash bench/gpu/run.sh $BUNDLE $OUT ${MODE[*]}" >&2
# a clean environment: only what a fresh shell on the GPU machine would have
${NET[@]+"${NET[@]}"} env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$HOME" LANG=C.UTF-8 PYTHON="$SIM/bin/python" \
  FASTXFER_GPU_SITE="${FASTXFER_GPU_SITE:-/tmp/fastxfer-gpu-site-sim}" bash "$REPO/bench/gpu/run.sh" "$BUNDLE" "$OUT" "${MODE[@]}"
RC=$?
P=
for c in ${PY312:-python3.12} $(pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12; do   # a pyenv shim may not run
  c=$(command -v "$c") && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { P=$c; break; }
done
if [ -n "$P" ]; then
  T=$(mktemp -d /tmp/fastxfer-gpu-site312.XXXXXX)
  echo "python 3.12 ($("$P" -c 'import sys; print(sys.executable)')): install with pip $("$P" -m pip --version | cut -d' ' -f2), network off, into $T, then compileall" >&2
  ${NET[@]+"${NET[@]}"} env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$HOME" PIP_CONFIG_FILE=/dev/null PIP_ROOT_USER_ACTION=ignore "$P" -m pip install -q --no-index --no-deps \
    --no-compile --no-cache-dir --upgrade --target "$T" "$BUNDLE"/wheels/*.whl && "$P" -m compileall -q "$T" >/dev/null \
    && echo "python 3.12: $(ls -d "$T"/*.dist-info | wc -l) distributions installed, every module compiles" >&2
  RC12=$?; rm -rf "$T"
  [ $RC12 = 0 ] || echo "error: the install or byte-compilation with python 3.12 failed" >&2
  [ $RC = 0 ] && RC=$RC12
else echo "note: no python3.12 here; the install was checked with $("$SIM/bin/python" --version 2>&1) only" >&2
fi
exit $RC
