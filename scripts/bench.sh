#!/usr/bin/env bash
# End-to-end overhead benchmark: direct vs nginx vs LiteLLM vs Turnout, in one run.
#
#   scripts/bench.sh                 full run (2 rounds, ~15 min), table + JSON
#   scripts/bench.sh --quick         1 round, shorter steps, no 4,000-stream step (~4 min)
#   scripts/bench.sh --no-litellm    skip installing and measuring LiteLLM
#   scripts/bench.sh --soak 30       30-minute memory soak of Turnout instead
#   scripts/bench.sh --rounds 3 --targets direct,nginx,turnout
#   scripts/bench.sh --no-litellm --quick --targets direct,turnout,endpoints
#                                    CPU per request with two `endpoints` per upstream
#                                    vs one `base_url` (target "endpoints"), same run
#   scripts/bench.sh --targets direct,nginx,turnout,progressive --no-litellm
#                                    Turnout with and without the audit log and shadow
#                                    traffic ("progressive", a default target), same run
#   TURNOUT_BASELINE_BIN=/path/to/old/turnout scripts/bench.sh --no-litellm
#                                    also measure an older build as target "baseline"
#
# Env: BENCH_OUT (output dir, default bench-results/<UTC time>), BENCH_CACHE
# (LiteLLM venv, default ~/.cache/turnout-bench), TURNOUT_BIN / LOADGEN_BIN
# (skip the build and use these binaries), LITELLM_VERSION (default 1.109.1),
# TURNOUT_BASELINE_BIN (an older turnout binary: run exactly like turnout as the
# target "baseline", added to the default targets; the table gains a
# turnout/baseline column).
#
# Installs what it needs on a fresh Debian machine: wrk and nginx (apt), LiteLLM
# (PyPI, into a venv; see scripts/bench/install-litellm.sh). Uses 127.0.0.1 only;
# every process it starts is stopped by its id on exit. Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

orig_args="$*"
litellm=1
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-litellm) litellm=0 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) args+=("$1") ;;
  esac
  shift
done

log() { echo "[bench.sh] $*" >&2; }

# --- tools --------------------------------------------------------------------
need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v taskset >/dev/null || need_apt+=(util-linux)
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]} (apt)"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

litellm_bin=""
if [ "$litellm" = 1 ]; then
  venv="${BENCH_CACHE:-$HOME/.cache/turnout-bench}/litellm-venv"
  mkdir -p "$(dirname "$venv")"
  if scripts/bench/install-litellm.sh "$venv" "${LITELLM_VERSION:-1.109.1}" >&2; then
    litellm_bin="$venv/bin/litellm"
  else
    log "LiteLLM could not be installed: measuring without it (see the log above)"
  fi
fi

# --- binaries -----------------------------------------------------------------
out="${BENCH_OUT:-$root/bench-results/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
mkdir -p "$out/bin"
if [ -n "${TURNOUT_BIN:-}" ] && [ -n "${LOADGEN_BIN:-}" ]; then
  cp "$TURNOUT_BIN" "$out/bin/turnout"; cp "$LOADGEN_BIN" "$out/bin/loadgen"
else
  log "building release binaries"
  target_dir=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  # Two builds: built with the example in one call, the proxy would carry the
  # dev-dependencies' features (tokio's test-util clock, ...), which the
  # binary users run does not. Copies: a concurrent build must not swap the
  # binaries mid-run.
  cargo build --release --bin turnout >&2
  cp "$target_dir/release/turnout" "$out/bin/turnout"
  cargo build --release --example loadgen >&2
  cp "$target_dir/release/examples/loadgen" "$out/bin/loadgen"
fi
if [ -n "${TURNOUT_BASELINE_BIN:-}" ]; then
  cp "$TURNOUT_BASELINE_BIN" "$out/bin/turnout-baseline"
fi

# 4,000 streams: the proxy holds 8,000 sockets, the load generator and the
# provider 4,000 each.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 65536 ]; then
  ulimit -n 65536 2>/dev/null || log "ulimit -n is $(ulimit -n): the 4,000-stream step may fail"
fi

cmd="scripts/bench.sh${orig_args:+ $orig_args}"
[ -n "${TURNOUT_BASELINE_BIN:-}" ] && cmd="TURNOUT_BASELINE_BIN=$TURNOUT_BASELINE_BIN $cmd"
py_args=(--turnout "$out/bin/turnout" --loadgen "$out/bin/loadgen" --nginx "$nginx_bin" --out "$out"
         --command "$cmd")
[ -n "$litellm_bin" ] && py_args+=(--litellm "$litellm_bin")
[ -n "${TURNOUT_BASELINE_BIN:-}" ] && py_args+=(--baseline "$out/bin/turnout-baseline")
log "results in $out"
exec python3 scripts/bench/bench.py "${py_args[@]}" ${args[@]+"${args[@]}"}
