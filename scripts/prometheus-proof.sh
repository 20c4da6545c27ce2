#!/usr/bin/env bash
# The observability proof: the dashboards and alert rules work against a real
# Prometheus scraping a real Turnout.
#
#   scripts/prometheus-proof.sh [TURNOUT_BIN]    (default $TURNOUT_BIN, else target/release/turnout)
#   scripts/prometheus-proof.sh --self-test      (no Turnout: a fake exporter of the same metric
#                                                 families, scripts/testdata/; checks the checker)
#
# Steps
#  1. installs Prometheus if `prometheus` or `promtool` is missing (Debian package `prometheus`);
#  2. promtool check rules / test rules / check config on dashboards/;
#  3. starts Turnout on loopback with a temporary config: built-in simulated upstreams, a
#     primary that fails 30% of the time (failovers), a split route whose target is slow and
#     fails (automatic rollback), a split route rolled back through the admin API (manual
#     rollback), a route whose only upstream always fails (client 5xx), a small retry budget
#     (refused retries), pricing (cost metrics);
#  4. starts Prometheus on 127.0.0.1 (free port, temp storage, scrape and rule evaluation
#     every 1s) scraping Turnout's admin listener and loading dashboards/alerts.yml;
#  5. drives ~25s of traffic with curl: streaming (with usage) and not, many x-user-id values,
#     unknown models (404), the broken route (5xx), and the manual rollback half way;
#  6. checks that the scenario happened (failovers, auto and manual rollback, 404, 5xx,
#     tokens, cost), then evaluates EVERY PromQL expression of dashboards/*.json and every
#     rule of dashboards/alerts.yml through the HTTP API (scripts/promql_check.py: fails on a
#     query error, an empty result, or a metric name Prometheus does not have) and requires
#     the TurnoutAutoRollback alert to fire;
#  7. negative check: a copy of the overview dashboard with one metric name misspelt must
#     make the checker fail.
# Only 127.0.0.1 is contacted; every process started is stopped by PID on exit. Bounded:
# a watchdog stops the run after PROOF_TIMEOUT seconds (default 170, not counting step 1).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
mode=real
bin="${TURNOUT_BIN:-$root/target/release/turnout}"
case "${1:-}" in
  --self-test | --fake) mode=fake ;;
  -h | --help) sed -n '2,32p' "$0"; exit 0 ;;
  "") ;;
  *) bin="$1" ;;
esac
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac # relative to the caller's directory
cd "$root"
traffic_seconds="${PROOF_TRAFFIC_SECONDS:-25}"

say() { printf '\n== %s\n' "$*"; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# --- 1. Prometheus -----------------------------------------------------------
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  say "installing Prometheus (Debian package prometheus)"
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y -q prometheus; then
    $sudo apt-get update -q
    $sudo apt-get install -y -q prometheus
  fi
fi
prometheus --version 2>&1 | head -1

# --- processes, cleanup, watchdog ---------------------------------------------
tmp="$(mktemp -d "${TMPDIR:-/tmp}/turnout-proof.XXXXXX")"
pids=()
ok=0
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$ok" != 1 ]; then
    for log in "$tmp"/*.log; do
      [ -s "$log" ] || continue
      printf '\n--- last lines of %s\n' "$(basename "$log")" >&2
      tail -n 25 "$log" >&2
    done
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 124' TERM
trap 'exit 130' INT
# The watchdog is one process, so that stopping it by PID leaves nothing behind.
python3 -c 'import os, signal, sys, time
time.sleep(float(sys.argv[1]))
print("FAIL: proof timed out after %s s" % sys.argv[1], file=sys.stderr)
os.kill(int(sys.argv[2]), signal.SIGTERM)' "${PROOF_TIMEOUT:-170}" $$ &
pids+=($!)

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2s until it succeeds.
wait_for() {
  local deadline=$((SECONDS + $1)) what="$2"
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "timed out waiting for $what"
    sleep 0.2
  done
}

# wait_for_soft SECONDS COMMAND...: the same, but only returns non-zero on time-out.
wait_for_soft() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# promq EXPR: the first value of an instant query, or empty.
promq() {
  curl -fsS --max-time 5 "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'
}
positive() { local v; v="$(promq "$1")"; [ -n "$v" ] && python3 -c "import sys; sys.exit(0 if float('$v') > 0 else 1)"; }

# --- 2. promtool --------------------------------------------------------------
say "promtool check rules / test rules / check config"
promtool check rules dashboards/alerts.yml
promtool test rules dashboards/alerts.test.yml
promtool check config dashboards/prometheus.yml

# --- 3. the scraped target ------------------------------------------------------
port="$(free_port)"
admin_port="$(free_port)"
prom_port="$(free_port)"
export TURNOUT_ADMIN_TOKEN="proof-admin-token"
if [ "$mode" = real ]; then
  say "starting Turnout ($bin) on 127.0.0.1:$port, admin 127.0.0.1:$admin_port"
  [ -x "$bin" ] || die "no Turnout binary at $bin (build it with cargo build --release, or pass its path)"
  cat >"$tmp/turnout.yaml" <<EOF
# Written by scripts/prometheus-proof.sh.
listen: "127.0.0.1:$port"
admin:
  listen: "127.0.0.1:$admin_port"
  token_env: TURNOUT_ADMIN_TOKEN
state_path: "$tmp/turnout-state.json"
auth: { disabled: true }
# A small retry budget: some retries are refused (turnout_retry_budget_exhausted_total).
failover: { max_attempts: 3, budget_ratio: 0.1, budget_min_per_second: 1, backoff_base: 5ms, backoff_max: 20ms }
outlier: { consecutive_failures: 10, window: 10s, min_requests: 20 }
upstreams:
  - name: sim-primary          # fails 30%: failovers to sim-fallback
    simulate: { latency: 20ms, ttft: 20ms, chunks: 4, chunk_delay: 5ms, fail_rate: 0.3 }
    health: { interval: 1s, timeout: 500ms }
    pricing: { "*": { input: 2.5, output: 10.0 } }
  - name: sim-fallback
    simulate: { latency: 10ms, ttft: 10ms, chunks: 4, chunk_delay: 5ms }
    health: { interval: 1s, timeout: 500ms }
    pricing: { "*": { input: 1.0, output: 4.0 } }
  - name: sim-target           # slow and failing: the split of route chat rolls back by itself
    simulate: { latency: 150ms, ttft: 150ms, chunks: 4, chunk_delay: 5ms, fail_rate: 0.4 }
    health: { enabled: false } # judged by live traffic only, so it takes part until the rollback
    pricing: { "*": { input: 0.5, output: 2.0 } }
  - name: sim-canary
    simulate: { latency: 10ms, ttft: 10ms, chunks: 4, chunk_delay: 5ms }
    health: { interval: 1s, timeout: 500ms }
    pricing: { "*": { input: 0.5, output: 2.0 } }
  - name: sim-broken           # always 500: client 5xx on route broken
    simulate: { latency: 5ms, fail_rate: 1.0 }
    health: { interval: 1s, timeout: 500ms }
routes:
  - name: chat
    models: ["gpt-4o-mini", "gpt-4o"]
    primary: sim-primary
    fallbacks: [sim-fallback]
    split:
      target: sim-target
      percentage: 50
      auto_rollback: { window: 10s, min_requests: 10, max_error_rate: 0.2, max_p95_ttfb: 50ms }
  - name: canary               # ramp, gates and shadow (PRODUCT.md §3.9); shadows go to sim-canary
    models: ["canary-*"]
    primary: sim-fallback
    split:
      target: sim-canary
      percentage: 50
      auto_rollback: { enabled: false }
      ramp: { steps: [50, 100], bake: 1h }
      gates: { window: 10s, min_requests: 5, max_error_rate_increase: 0.5, max_latency_ratio: 20 }
      shadow: { percentage: 100, max_rps: 20 }
  - name: broken
    models: ["broken-*"]
    primary: sim-broken
EOF
  "$bin" serve --config "$tmp/turnout.yaml" >"$tmp/turnout.log" 2>&1 &
  turnout_pid=$!
  pids+=("$turnout_pid")
  health_up() { kill -0 "$turnout_pid" && curl -fsS --max-time 1 "http://127.0.0.1:$port/health"; }
  wait_for_soft 30 health_up || {
    kill -0 "$turnout_pid" 2>/dev/null || die "Turnout exited at start (see turnout.log)"
    die "timed out waiting for Turnout's GET /health"
  }
  curl -fsS --max-time 2 "http://127.0.0.1:$admin_port/metrics" >/dev/null ||
    die "no /metrics on the admin listener 127.0.0.1:$admin_port"
else
  say "starting the fake exporter on 127.0.0.1:$admin_port (self-test: no Turnout)"
  python3 scripts/testdata/fake_turnout_exporter.py "$admin_port" >"$tmp/fake.log" 2>&1 &
  pids+=($!)
  wait_for 10 "fake exporter" curl -fsS --max-time 1 "http://127.0.0.1:$admin_port/health"
fi

# --- 4. Prometheus ------------------------------------------------------------
say "starting Prometheus on 127.0.0.1:$prom_port"
cp dashboards/alerts.yml "$tmp/alerts.yml"
cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: ["$tmp/alerts.yml"]
scrape_configs:
  - job_name: turnout
    static_configs:
      - targets: ["127.0.0.1:$admin_port"]
EOF
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
  --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$tmp/prometheus.log" 2>&1 &
pids+=($!)
wait_for 30 "Prometheus ready" curl -fsS --max-time 1 "http://127.0.0.1:$prom_port/-/ready"
scraped() { [ "$(promq 'up{job="turnout"}')" = 1 ]; }
wait_for 20 "a first scrape of the target" scraped

# --- 5. traffic ---------------------------------------------------------------
if [ "$mode" = real ]; then
  say "driving traffic for ${traffic_seconds}s"
  api="http://127.0.0.1:$port/v1/chat/completions"
  end=$((SECONDS + traffic_seconds))
  worker() {
    local w=$1 i=0 model stream body
    while [ "$SECONDS" -lt "$end" ]; do
      i=$((i + 1))
      case $((i % 20)) in
        0) model="no-such-model" ;;        # no route: 404
        5 | 15) model="broken-1" ;;        # only a failing upstream: 5xx
        1 | 3 | 7 | 11) model="canary-1" ;;
        *) model="gpt-4o-mini" ;;
      esac
      if [ $((i % 2)) = 0 ]; then
        stream=',"stream":true,"stream_options":{"include_usage":true}'
      else
        stream=""
      fi
      body="{\"model\":\"$model\",\"messages\":[{\"role\":\"user\",\"content\":\"hello $i\"}]$stream}"
      curl -sS -o /dev/null -w '%{http_code}\n' --max-time 10 \
        -H 'content-type: application/json' -H "x-user-id: user-$(((i * 7 + w * 13) % 60))" \
        -d "$body" "$api" >>"$tmp/codes.$w" 2>/dev/null || echo 000 >>"$tmp/codes.$w"
      sleep 0.02
    done
  }
  wpids=()
  for w in 1 2 3; do worker "$w" & wpids+=($!); pids+=($!); done
  sleep $((traffic_seconds / 2))
  code="$(curl -sS -o "$tmp/rollback.json" -w '%{http_code}' --max-time 5 -X POST \
    -H "Authorization: Bearer $TURNOUT_ADMIN_TOKEN" \
    "http://127.0.0.1:$admin_port/admin/routes/canary/rollback" || echo 000)"
  echo "manual rollback of route canary: HTTP $code $(head -c 300 "$tmp/rollback.json" 2>/dev/null)"
  case "$code" in 2??) ;; *) die "POST /admin/routes/canary/rollback answered $code" ;; esac
  for p in "${wpids[@]}"; do wait "$p"; done
  echo "client status codes:"
  cat "$tmp"/codes.* | sort | uniq -c | sed 's/^/  /'
  curl -fsS --max-time 5 -H "Authorization: Bearer $TURNOUT_ADMIN_TOKEN" \
    "http://127.0.0.1:$admin_port/admin/status" | head -c 1500 || true
  echo
  sleep 3 # a few more scrapes and rule evaluations
else
  say "self-test: letting the fake counters move for 10s"
  sleep 10
fi

# --- 6. checks ----------------------------------------------------------------
if [ "$mode" = real ]; then
  say "the scenario happened"
  fails=0
  for check in \
    'failovers|sum(turnout_failovers_total)' \
    'automatic rollback|sum(turnout_rollbacks_total{trigger="auto"})' \
    'manual rollback|sum(turnout_rollbacks_total{trigger="manual"})' \
    'requests served by the split target|sum(turnout_requests_total{upstream="sim-target"})' \
    '404 for an unknown model|sum(turnout_requests_total{code="404"})' \
    'client 5xx|sum(turnout_requests_total{code=~"5.."})' \
    'tokens|sum(turnout_tokens_total)' \
    'shadow copies|sum(turnout_shadow_requests_total{outcome="ok"})' \
    'shadow pairs compared|sum(turnout_shadow_pairs_total)' \
    'gate figures|max(max_over_time(turnout_gate_requests[5m]))' \
    'ramp step|max(turnout_ramp_step)' \
    'cost|sum(turnout_cost_usd_total)'; do
    what="${check%%|*}"
    expr="${check#*|}"
    if positive "$expr"; then
      echo "ok    $what: $expr = $(promq "$expr")"
    else
      echo "FAIL  $what: $expr = '$(promq "$expr")' (expected > 0)"
      fails=$((fails + 1))
    fi
  done
  [ "$fails" = 0 ] || die "$fails scenario checks failed"
  vars=(--var primary=sim-primary --var target=sim-target)
else
  vars=(--var primary=sim-primary --var target=sim-target)
fi

say "every PromQL expression of the dashboards and rules"
alert_up() { [ -n "$(promq 'ALERTS{alertname="TurnoutAutoRollback"}')" ]; }
wait_for_soft 20 alert_up || true # promql_check.py reports it
python3 scripts/promql_check.py check -v --prom "http://127.0.0.1:$prom_port" \
  --rules-file dashboards/alerts.yml --expect-alert TurnoutAutoRollback "${vars[@]}" \
  dashboards/overview.json dashboards/migration.json dashboards/cost.json

# --- 7. the check bites -------------------------------------------------------
say "negative check: a dashboard naming a metric that does not exist must fail"
sed 's/turnout_failovers_total/turnout_failovers_totl/g' dashboards/overview.json >"$tmp/overview-typo.json"
if python3 scripts/promql_check.py check --prom "http://127.0.0.1:$prom_port" "${vars[@]}" \
  "$tmp/overview-typo.json" >"$tmp/negative.out" 2>&1; then
  cat "$tmp/negative.out"
  die "the checker accepted a dashboard naming turnout_failovers_totl"
fi
grep -q 'unknown metric turnout_failovers_totl' "$tmp/negative.out" ||
  { cat "$tmp/negative.out"; die "the checker failed, but not for the misspelt metric"; }
grep 'FAIL' "$tmp/negative.out" | head -3
echo "ok: the checker rejects the misspelt metric ($(grep -c '^FAIL' "$tmp/negative.out") expressions)"

ok=1
say "observability proof passed ($mode)"
