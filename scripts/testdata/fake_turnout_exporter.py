#!/usr/bin/env python3
"""A stand-in for Turnout's admin listener: GET /metrics and GET /health.

Serves every metric family of src/metrics.rs (same names, types and labels)
with counters that grow with time, so that the dashboards and rules can be
checked against a real Prometheus without building Turnout
(`scripts/prometheus-proof.sh --self-test`). The real proof runs the real
binary; keep this file in step with src/metrics.rs when families change.

Usage: fake_turnout_exporter.py PORT
"""
import http.server
import sys
import time

START = time.time()
FIRST_SCRAPE = []  # rollbacks happen a few seconds after the first scrape, so that
                   # Prometheus sees their counters at 0 first, as with Turnout
ROUTES = {"chat": ("sim-primary", "sim-fallback", "sim-target"), "canary": ("sim-fallback", "sim-canary")}
UPSTREAMS = ["sim-primary", "sim-fallback", "sim-target", "sim-canary", "sim-broken"]
BUCKETS = [0.005 * 2 ** n for n in range(18)]


def fmt_labels(labels):
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


class Out:
    def __init__(self):
        self.lines = []

    def family(self, name, kind, help_text):
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name, labels, value):
        self.lines.append(f"{name}{fmt_labels(labels)} {value}")

    def histogram(self, name, labels, count, mean):
        # Every observation at `mean`: cumulative buckets jump at the first bound >= mean.
        for b in BUCKETS:
            self.sample(f"{name}_bucket", dict(labels, le=f"{b:g}"), count if mean <= b else 0)
        self.sample(f"{name}_bucket", dict(labels, le="+Inf"), count)
        self.sample(f"{name}_sum", labels, round(count * mean, 6))
        self.sample(f"{name}_count", labels, count)


def render():
    t = time.time() - START
    if not FIRST_SCRAPE:
        FIRST_SCRAPE.append(time.time())
    since_scrape = time.time() - FIRST_SCRAPE[0]
    o = Out()
    n = lambda per_s: int(per_s * t)  # a counter that grows at per_s

    o.family("turnout_requests_total", "counter", "Client requests by route, upstream and HTTP status code.")
    for route, ups in ROUTES.items():
        for i, u in enumerate(ups):
            o.sample("turnout_requests_total", {"route": route, "upstream": u, "code": "200", "transport": "http"}, n(10 - 3 * i))
    o.sample("turnout_requests_total", {"route": "chat", "upstream": "sim-fallback", "code": "502", "transport": "http"}, n(0.2))
    o.sample("turnout_requests_total", {"route": "none", "upstream": "none", "code": "404", "transport": "http"}, n(0.5))
    o.sample("turnout_requests_total", {"route": "chat", "upstream": "sim-primary", "code": "200", "transport": "ws"}, n(1))

    for fam, help_text, mean in (
        ("turnout_request_duration_seconds", "Request duration as seen by the client.", 0.08),
        ("turnout_time_to_first_token_seconds", "Time to the first token.", 0.03),
    ):
        o.family(fam, "histogram", help_text)
        for route, ups in ROUTES.items():
            for i, u in enumerate(ups):
                for tr in ("http", "ws"):
                    o.histogram(fam, {"route": route, "upstream": u, "transport": tr}, n(5 - i), mean * (i + 1))

    o.family("turnout_failovers_total", "counter", "Requests moved on from one upstream to the next.")
    o.sample("turnout_failovers_total", {"route": "chat", "from": "sim-primary", "to": "sim-fallback", "reason": "http_5xx"}, n(2))
    o.sample("turnout_failovers_total", {"route": "chat", "from": "sim-target", "to": "sim-primary", "reason": "http_5xx"}, n(1))

    o.family("turnout_upstream_healthy", "gauge", "1 when the upstream is usable for routing.")
    for u in UPSTREAMS:
        o.sample("turnout_upstream_healthy", {"upstream": u}, 0 if u == "sim-broken" else 1)
    o.family("turnout_upstream_state", "gauge", "Health state of the upstream (one-hot).")
    for u in UPSTREAMS:
        for s in ("healthy", "unhealthy", "ejected"):
            on = (s == "ejected") if u == "sim-broken" else (s == "healthy")
            o.sample("turnout_upstream_state", {"upstream": u, "state": s}, int(on))

    o.family("turnout_split_percentage", "gauge", "Effective share of users sent to the split target, in percent.")
    o.sample("turnout_split_percentage", {"route": "chat"}, 0 if since_scrape > 3 else 50)
    o.sample("turnout_split_percentage", {"route": "canary"}, 0 if since_scrape > 5 else 50)

    o.family("turnout_rollbacks_total", "counter", "Split rollbacks by trigger (manual, auto).")
    for route, at in (("chat", 3), ("canary", 5)):
        for trig in ("manual", "auto"):
            hit = (route == "chat") == (trig == "auto") and since_scrape > at
            o.sample("turnout_rollbacks_total", {"route": route, "trigger": trig}, int(hit))

    o.family("turnout_tokens_total", "counter", "Tokens by upstream, model and type (prompt, completion).")
    for u in UPSTREAMS[:4]:
        o.sample("turnout_tokens_total", {"upstream": u, "model": "other", "type": "prompt"}, n(100))
        o.sample("turnout_tokens_total", {"upstream": u, "model": "other", "type": "completion"}, n(300))

    for fam, help_text, scale in (("turnout_cost_usd_total", "USD spent at the serving upstream's prices.", 1.0),
                                  ("turnout_baseline_cost_usd_total", "The same tokens priced at the route primary's prices.", 1.5)):
        o.family(fam, "counter", help_text)
        for route, ups in ROUTES.items():
            for u in ups:
                o.sample(fam, {"route": route, "upstream": u, "model": "other"}, round(0.001 * scale * t, 6))

    o.family("turnout_upstream_attempts_total", "counter", "Upstream attempts by outcome.")
    for u in UPSTREAMS:
        o.sample("turnout_upstream_attempts_total", {"upstream": u, "outcome": "ok"}, n(0 if u == "sim-broken" else 8))
        o.sample("turnout_upstream_attempts_total", {"upstream": u, "outcome": "http_5xx"}, n(2))

    o.family("turnout_probe_duration_seconds", "histogram", "Active health probe latency.")
    for u in UPSTREAMS:
        o.histogram("turnout_probe_duration_seconds", {"upstream": u}, n(1), 0.002)
    o.family("turnout_probes_total", "counter", "Active health probes by result (ok, fail).")
    for u in UPSTREAMS:
        o.sample("turnout_probes_total", {"upstream": u, "result": "fail" if u == "sim-broken" else "ok"}, n(1))

    o.family("turnout_active_streams", "gauge", "Streams open right now.")
    for tr in ("http", "ws"):
        o.sample("turnout_active_streams", {"transport": tr}, 2)
    for fam in ("turnout_retries_total", "turnout_retry_budget_exhausted_total"):
        o.family(fam, "counter", "Retries.")
        for route in ROUTES:
            o.sample(fam, {"route": route}, n(1))
    o.family("turnout_health_transitions_total", "counter", "Upstream health state changes by new state.")
    for u in UPSTREAMS:
        for s in ("healthy", "unhealthy", "ejected"):
            o.sample("turnout_health_transitions_total", {"upstream": u, "state": s}, 0)
    o.family("turnout_ejections_total", "counter", "Upstreams ejected after failing live traffic.")
    for u in UPSTREAMS:
        o.sample("turnout_ejections_total", {"upstream": u}, int(u == "sim-broken"))
    o.family("turnout_alerts_total", "counter", "Webhook alerts by result (sent, failed, dropped).")
    for r in ("sent", "failed", "dropped"):
        o.sample("turnout_alerts_total", {"result": r}, 0)
    o.family("turnout_stream_errors_total", "counter", "Streams ended with an error event after the first byte.")
    o.sample("turnout_stream_errors_total", {"route": "chat", "upstream": "sim-primary", "reason": "reset"}, 0)
    # Progressive delivery (PRODUCT.md §3.9): route canary ramps, gates and shadows.
    o.family("turnout_ramp_step", "gauge", "The current ramp step's percentage.")
    o.sample("turnout_ramp_step", {"route": "canary"}, 50)
    for fam, kind, values in (
        ("turnout_gate_requests", "gauge", {"target": 40, "control": 60}),
        ("turnout_gate_error_rate", "gauge", {"target": 0.02, "control": 0.01}),
        ("turnout_gate_latency_p95_seconds", "gauge", {"target": 0.03, "control": 0.025}),
    ):
        o.family(fam, kind, "Gate cohort figures.")
        for cohort, v in values.items():
            o.sample(fam, {"route": "canary", "cohort": cohort}, v)
    o.family("turnout_gate_verdict", "gauge", "The gate's verdict, one-hot.")
    for v in ("pass", "fail", "insufficient"):
        o.sample("turnout_gate_verdict", {"route": "canary", "verdict": v}, int(v == "pass"))
    o.family("turnout_shadow_requests_total", "counter", "Shadow requests by outcome.")
    for outcome, rate in (("ok", 2), ("error", 0.1), ("dropped", 0.5)):
        o.sample("turnout_shadow_requests_total", {"route": "canary", "outcome": outcome}, n(rate))
    o.family("turnout_shadow_tokens_total", "counter", "Tokens of shadow requests.")
    for typ in ("prompt", "completion"):
        o.sample("turnout_shadow_tokens_total", {"route": "canary", "upstream": "sim-canary", "type": typ}, n(50))
    o.family("turnout_shadow_cost_usd_total", "counter", "USD of shadow requests.")
    o.sample("turnout_shadow_cost_usd_total", {"route": "canary", "upstream": "sim-canary"}, round(0.0005 * t, 6))
    o.family("turnout_shadow_pairs_total", "counter", "Primary/shadow pairs compared, by shape.")
    for shape, rate in (("same", 1.9), ("different", 0.1)):
        o.sample("turnout_shadow_pairs_total", {"route": "canary", "shape": shape}, n(rate))
    o.family("turnout_shadow_latency_ratio", "histogram", "Shadow latency over the primary's, per pair.")
    o.histogram("turnout_shadow_latency_ratio", {"route": "canary"}, n(2), 1.2)
    o.family("turnout_audit_dropped_total", "counter", "Audit lines dropped because the writer's queue was full.")
    o.sample("turnout_audit_dropped_total", {}, 0)
    o.family("turnout_websocket_connections", "gauge", "Open WebSocket connections.")
    o.sample("turnout_websocket_connections", {}, 1)
    o.family("turnout_start_time_seconds", "gauge", "Process start time, unix seconds.")
    o.sample("turnout_start_time_seconds", {}, round(START, 3))
    o.family("turnout_build_info", "gauge", "Always 1; labelled with the version.")
    o.sample("turnout_build_info", {"version": "0.0.0-fake"}, 1)
    return "\n".join(o.lines) + "\n"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/metrics":
            body, ctype = render().encode(), "text/plain; version=0.0.4"
        elif self.path == "/health":
            body, ctype = b'{"status":"ok"}', "application/json"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.serve_forever()
