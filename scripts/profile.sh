#!/usr/bin/env bash
# Instructions per proxied request, from callgrind (repeatable to ~1 % on a
# loaded machine, where wall-clock figures move by 20 %).
#
#   scripts/profile.sh [--config turnout|progressive|redis|full] [--seconds 8]
#                      [--bin target/release/turnout] [--out DIR] [--port-base 19100]
#
# Starts the three simulated providers of scripts/bench.sh (on --port-base+1..3),
# Turnout under `valgrind --tool=callgrind` with instrumentation off, warms it
# up with wrk (non-streaming chat, 16 connections, 3 s), turns instrumentation
# on for --seconds of the same load, dumps, and prints instructions per request.
# Configs: turnout = the benchmark's (split, failover chain, health probes,
# metrics, the log line at info); progressive = + audit log + shadow; redis = +
# `redis` (starts a redis-server on --port-base+9); full = all of them.
# Read the profile with:
#   callgrind_annotate --inclusive=yes --auto=no DIR/callgrind.out.1 | less
# Every process it starts is stopped by its id on exit. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=turnout; secs=8; bin=target/release/turnout; base=19100; out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --config) kind=$2; shift ;;
    --seconds) secs=$2; shift ;;
    --bin) bin=$2; shift ;;
    --out) out=$2; shift ;;
    --port-base) base=$2; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
for tool in valgrind callgrind_control callgrind_annotate wrk curl; do
  command -v $tool >/dev/null || { echo "profile.sh: $tool is needed (apt-get install -y valgrind wrk curl)" >&2; exit 2; }
done
out=${out:-/tmp/turnout-profile-$kind-$$}
mkdir -p "$out"
bin=$(readlink -f "$bin")
port=$((base + 30)); admin=$((base + 31)); redis_port=$((base + 9))
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT

i=1
for s in "fast:--chunks 20" "stream:--chunks 20 --chunk-delay 5ms" "slow:--chunks 100 --chunk-delay 2s"; do
  name=${s%%:*}; args=${s#*:}
  # shellcheck disable=SC2086
  "$bin" mock --listen "127.0.0.1:$((base + i))" --name "mock-$name" $args >"$out/mock-$name.log" 2>&1 &
  pids+=($!)
  i=$((i + 1))
done

extra=""; split_extra=""
case "$kind" in
  turnout) ;;
  progressive|full|redis) ;;
  *) echo "unknown config $kind" >&2; exit 2 ;;
esac
if [ "$kind" = progressive ] || [ "$kind" = full ]; then
  split_extra=", shadow: { percentage: 100, max_rps: 50 }"
  extra+="audit: { path: $out/audit.jsonl, max_bytes: 200MB, keep: 1 }"$'\n'
fi
if [ "$kind" = redis ] || [ "$kind" = full ]; then
  command -v redis-server >/dev/null || { echo "profile.sh: redis-server is needed" >&2; exit 2; }
  redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --dir "$out" >"$out/redis.log" 2>&1 &
  pids+=($!)
  extra+='redis: { url_env: TURNOUT_PROFILE_REDIS_URL, key_prefix: "profile:" }'$'\n'
fi
{
  echo "listen: \"127.0.0.1:$port\""
  echo "admin: { listen: \"127.0.0.1:$admin\", token_env: TURNOUT_PROFILE_ADMIN_TOKEN }"
  echo "state_path: $out/turnout-state.json"
  echo "auth: { disabled: true }"
  echo "log: { level: info }"
  echo "upstreams:"
  i=1
  for s in fast stream slow; do
    for side in a b; do
      echo "  - name: $s-$side"
      echo "    base_url: \"http://127.0.0.1:$((base + i))/v1\""
      echo "    health: { path: /models, interval: 5s, timeout: 2s }"
      echo "    pricing: { \"*\": { input: 1.0, output: 4.0 } }"
    done
    i=$((i + 1))
  done
  echo "routes:"
  for s in fast stream slow; do
    echo "  - name: $s"
    echo "    models: [\"bench-$s\"]"
    echo "    primary: $s-a"
    echo "    fallbacks: [$s-b]"
    echo "    split: { target: $s-b, percentage: 10$split_extra }"
  done
  printf '%s' "$extra"
} >"$out/turnout.yaml"

body="$out/body.json"
printf '%s' '{"model":"bench-fast","messages":[{"role":"system","content":"You are a helpful assistant that answers briefly."},{"role":"user","content":"Say hello and tell me one short fact about railway turnouts, please. Keep it under twenty words."}],"temperature":0.2,"max_tokens":64,"user":"user-1234"}' >"$body"
cat >"$out/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
LUA

TURNOUT_PROFILE_ADMIN_TOKEN=profile TURNOUT_PROFILE_REDIS_URL="redis://127.0.0.1:$redis_port/0" \
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/callgrind.out" \
  "$bin" serve --config "$out/turnout.yaml" >"$out/turnout.log" 2>"$out/valgrind.log" &
vg=$!
pids+=($vg)
url="http://127.0.0.1:$port/v1/chat/completions"
ok=0
for _ in $(seq 1 600); do
  if curl -sf -o /dev/null -XPOST -H 'content-type: application/json' --data @"$body" "$url"; then ok=1; break; fi
  kill -0 "$vg" 2>/dev/null || break
  sleep 0.2
done
[ "$ok" = 1 ] || { echo "profile.sh: Turnout did not answer (see $out/valgrind.log)" >&2; exit 1; }
BENCH_BODY=$body wrk -t1 -c16 -d3s -s "$out/post.lua" "$url" >/dev/null
callgrind_control -i on "$vg" >/dev/null
BENCH_BODY=$body wrk -t1 -c16 -d"${secs}s" -s "$out/post.lua" "$url" >"$out/wrk.txt"
callgrind_control -d "$vg" >/dev/null
reqs=$(awk '/requests in/{print $1}' "$out/wrk.txt")
total=$(callgrind_annotate --auto=no "$out/callgrind.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}' | head -1)
echo "profile: config=$kind requests=$reqs instructions=$total per_request=$((total / reqs)) out=$out"
