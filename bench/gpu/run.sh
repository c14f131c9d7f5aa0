#!/usr/bin/env bash
# The one-call GPU check: install the bundle's wheels without network, then run the steps of bench/gpu/check.py.
#
#   bash bench/gpu/run.sh BUNDLE OUT [--small] [--device cpu|cuda] [--budget S] [--steps a,b] [--install-only]
#
# BUNDLE is the folder `make gpu-bundle` builds (gpu-bundle/), OUT the folder for gpu_check.json and
# gpu_check.log. The wheels go with `pip install --no-index --no-deps --target $FASTXFER_GPU_SITE` (default
# /tmp/fastxfer-gpu-site, emptied first; pip's configuration files are ignored, so no index or constraint of the
# machine plays a part), then PYTHONPATH=$FASTXFER_GPU_SITE:<repo> and FASTXFER_SHARED=BUNDLE. $PYTHON (default
# python3) is the interpreter. --install-only stops after the install and an import check. Exit status: 0 when
# the install and every step passed.
set -u
if [ $# -lt 2 ]; then sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2; fi
T0=$(date +%s.%N)
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUNDLE=$(cd "$1" && pwd) || { echo "error: bundle folder $1 not found (make gpu-bundle)" >&2; exit 2; }
mkdir -p "$2" && OUT=$(cd "$2" && pwd)
shift 2
INSTALL_ONLY=0; ARGS=()
for a in "$@"; do if [ "$a" = --install-only ]; then INSTALL_ONLY=1; else ARGS+=("$a"); fi; done
PY=${PYTHON:-python3}
SITE=${FASTXFER_GPU_SITE:-/tmp/fastxfer-gpu-site}
LOG=$OUT/gpu_check.log
: > "$LOG"
shopt -s nullglob; WHEELS=("$BUNDLE"/wheels/*.whl); shopt -u nullglob
echo "===== install: ${#WHEELS[@]} wheels from $BUNDLE/wheels into $SITE with $($PY --version 2>&1) ($(command -v $PY))" | tee -a "$LOG" >&2
rm -rf "$SITE"
t=$(date +%s%N)
PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${WHEELS[@]}" >> "$LOG" 2>&1
RC=$?
[ ${#WHEELS[@]} -gt 0 ] || RC=2
MS=$(( ($(date +%s%N) - t) / 1000000 )); SECS=$(printf "%d.%03d" $((MS / 1000)) $((MS % 1000)))
echo "----- install: rc $RC, $SECS s" | tee -a "$LOG" >&2
printf '{"rc": %d, "seconds": %.1f, "wheels": %d, "target": "%s", "python": "%s", "pip": "%s"}\n' "$RC" "$SECS" "${#WHEELS[@]}" "$SITE" \
  "$($PY -c 'import sys; print(sys.version.split()[0])')" "$($PY -m pip --version 2>/dev/null | cut -d' ' -f2)" > "$OUT/install.json"
export PYTHONPATH="$SITE:$REPO"
cd "$REPO"
if [ "$INSTALL_ONLY" = 1 ]; then
  "$PY" bench/gpu/check.py --bundle "$BUNDLE" --out "$OUT" --t0 "$T0" --install "$OUT/install.json" --steps imports ${ARGS[@]+"${ARGS[@]}"}
  RC2=$?; rm -f "$OUT/install.json"; [ $RC = 0 ] && exit $RC2; exit $RC
fi
"$PY" bench/gpu/check.py --bundle "$BUNDLE" --out "$OUT" --t0 "$T0" --install "$OUT/install.json" ${ARGS[@]+"${ARGS[@]}"}
RC2=$?
rm -f "$OUT/install.json"    # it is in gpu_check.json
[ $RC = 0 ] && exit $RC2; exit $RC
