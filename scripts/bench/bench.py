#!/usr/bin/env python3
"""End-to-end overhead benchmark: direct vs nginx vs LiteLLM vs Turnout.

Run through scripts/bench.sh, which installs the tools and builds the binaries.
With --baseline, an older Turnout build is measured too, as the target
`baseline`, exactly like `turnout`, and the table gains a turnout/baseline column.
Everything listens on 127.0.0.1; every process started here is stopped by its
id on exit. The load generator and the simulated providers share one core, the
proxy under test gets the other. Results: a table on stdout, plus
results.json and results.md in the output directory.
"""

import argparse
import atexit
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
CLK_TCK = os.sysconf("SC_CLK_TCK")

PORTS = {
    "mock-fast": 18101,
    "mock-stream": 18102,
    "mock-slow": 18103,
    "nginx": 18110,
    "litellm": 18120,
    "turnout": 18130,
    "turnout-admin": 18131,
    "redis": 18140,
}
# Scenarios: which simulated provider serves them and how it behaves.
MOCKS = {
    # Non-streaming chat: answers at once.
    "fast": ["--chunks", "20"],
    # Streams: 20 chunks 5 ms apart, first one at once.
    "stream": ["--chunks", "20", "--chunk-delay", "5ms"],
    # Held streams: one event every 2 s for 200 s.
    "slow": ["--chunks", "100", "--chunk-delay", "2s"],
}

STARTED = []  # Popen objects, each the leader of its own session


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes


def start(cmd, core, logfile, env=None):
    """Starts a process pinned to `core` (None: unpinned) in its own session."""
    if core is not None:
        cmd = ["taskset", "-c", str(core)] + cmd
    out = open(logfile, "ab")
    p = subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=env, start_new_session=True,
    )
    STARTED.append(p)
    return p


def stop(p, grace=5.0):
    """Stops a process we started, and its children, by its id (its own session)."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(5)
    else:
        # The leader is gone; its session may still hold children.
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if p in STARTED:
        STARTED.remove(p)


def stop_all():
    for p in list(reversed(STARTED)):
        stop(p, grace=2.0)


def session_pids(sid):
    """Pids whose session is `sid` (a process we started and its children)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid:
            pids.append(int(d))
    return pids


def tree_cpu_ns(sid):
    """CPU time (user + system, ns) of every live thread of the session."""
    total = 0
    for pid in session_pids(sid):
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def tree_rss_kb(sid):
    total = 0
    for pid in session_pids(sid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def wait_port(port, timeout=60.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def wait_ok(url, body, timeout=90.0, proc=None):
    """Waits until a POST of `body` to `url` answers 200."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args} exited with {proc.returncode}")
        try:
            req = urllib.request.Request(
                url, data=body, headers={"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as r:
                r.read()
                if r.status == 200:
                    return
        except Exception as e:  # noqa: BLE001 (any failure means "not yet")
            last = e
        time.sleep(0.3)
    raise RuntimeError(f"{url} never answered 200: {last}")


# --------------------------------------------------------------------------- targets


def chat_body(model, stream):
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant that answers briefly."},
            {"role": "user", "content": "Say hello and tell me one short fact about railway "
                                        "turnouts, please. Keep it under twenty words."},
        ],
        "temperature": 0.2,
        "max_tokens": 64,
        "user": "user-1234",
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body, separators=(",", ":")).encode()


NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
worker_rlimit_nofile 200000;
events {{ worker_connections 65536; multi_accept on; }}
http {{
  access_log {dir}/nginx-access.log;
  client_body_temp_path {dir}/nginx-tmp;
  proxy_temp_path {dir}/nginx-tmp;
  fastcgi_temp_path {dir}/nginx-tmp;
  uwsgi_temp_path {dir}/nginx-tmp;
  scgi_temp_path {dir}/nginx-tmp;
  upstream fast {{ server 127.0.0.1:{fast}; keepalive 512; }}
  upstream stream {{ server 127.0.0.1:{stream}; keepalive 512; }}
  upstream slow {{ server 127.0.0.1:{slow}; keepalive 512; }}
  server {{
    listen 127.0.0.1:{port} backlog=65535;
    keepalive_requests 10000000;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    proxy_read_timeout 600s;
    location /fast/ {{ proxy_pass http://fast/; }}
    location /stream/ {{ proxy_pass http://stream/; }}
    location /slow/ {{ proxy_pass http://slow/; }}
  }}
}}
"""

TURNOUT_CONF = """\
# Generated by scripts/bench/bench.py: the whole product on the path (split,
# failover chain, health probes, metrics, a log line per request at info).
listen: "127.0.0.1:{port}"
admin:
  listen: "127.0.0.1:{admin}"
  token_env: TURNOUT_BENCH_ADMIN_TOKEN
state_path: {dir}/turnout-state.json
auth: {{ disabled: true }}
log: {{ level: info }}
upstreams:
{upstreams}
routes:
{routes}
{extra}"""

LITELLM_CONF = """\
model_list:
{models}
litellm_settings:
  drop_params: true
  set_verbose: false
  request_timeout: 600
  callbacks: []
  success_callback: []
  failure_callback: []
general_settings:
  # No client auth, like the other targets (loopback only, never in production).
  dangerously_permit_weak_or_unset_master_key: true
  disable_spend_logs: true
  disable_adding_master_key_hash_to_db: true
  allow_requests_on_db_unavailable: true
"""


class Target:
    """A system under test: how to start it and where each scenario is served."""

    name = ""
    proxy = True

    def __init__(self, ctx):
        self.ctx = ctx
        self.proc = None

    def url(self, scenario):
        raise NotImplementedError

    def model(self, scenario):
        return f"bench-{scenario}"

    def start(self):
        pass

    def stop(self):
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def sid(self):
        return self.proc.pid if self.proc is not None else None


class Direct(Target):
    name = "direct"
    proxy = False

    def url(self, scenario):
        return f"http://127.0.0.1:{PORTS['mock-' + scenario]}/v1/chat/completions"


class Nginx(Target):
    name = "nginx"

    def url(self, scenario):
        return f"http://127.0.0.1:{PORTS['nginx']}/{scenario}/v1/chat/completions"

    def start(self):
        d = os.path.join(self.ctx.out, "nginx")
        os.makedirs(os.path.join(d, "nginx-tmp"), exist_ok=True)
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(
                dir=d, port=PORTS["nginx"], fast=PORTS["mock-fast"],
                stream=PORTS["mock-stream"], slow=PORTS["mock-slow"]))
        self.proc = start([self.ctx.nginx, "-c", conf, "-p", d], self.ctx.proxy_core,
                          os.path.join(d, "nginx.out"))
        wait_port(PORTS["nginx"], proc=self.proc)


class Turnout(Target):
    name = "turnout"

    def binary(self):
        return self.ctx.turnout

    def url(self, scenario):
        return f"http://127.0.0.1:{PORTS['turnout']}/v1/chat/completions"

    def split_extra(self):
        return ""

    def extra(self, d):
        return ""

    def start(self):
        d = os.path.join(self.ctx.out, self.name)
        os.makedirs(d, exist_ok=True)
        ups, routes = [], []
        for s in MOCKS:
            base = f"http://127.0.0.1:{PORTS['mock-' + s]}/v1"
            for side, price in (("a", "1.0, output: 4.0"), ("b", "0.5, output: 2.0")):
                ups.append(f"  - name: {s}-{side}\n    {self.address(base)}\n"
                           f"    health: {{ path: /models, interval: 5s, timeout: 2s }}\n"
                           f"    pricing: {{ \"*\": {{ input: {price} }} }}")
            routes.append(f"  - name: {s}\n    models: [\"bench-{s}\"]\n    primary: {s}-a\n"
                          f"    fallbacks: [{s}-b]\n    split: {{ target: {s}-b, percentage: 10"
                          f"{self.split_extra()} }}")
        conf = os.path.join(d, "turnout.yaml")
        with open(conf, "w") as f:
            f.write(TURNOUT_CONF.format(
                port=PORTS["turnout"], admin=PORTS["turnout-admin"], dir=d,
                upstreams="\n".join(ups), routes="\n".join(routes), extra=self.extra(d)))
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        env.update(self.extra_env())
        self.proc = start([self.binary(), "serve", "--config", conf], self.ctx.proxy_core,
                          os.path.join(d, "turnout.log"), env=env)
        wait_port(PORTS["turnout"], proc=self.proc)

    def extra_env(self):
        return {}

    def address(self, base):
        return f"base_url: \"{base}\""


class TurnoutRedis(Turnout):
    """The same Turnout build and config with `redis` configured (shared
    shares, rate-limit leases, the 100 ms sync), against a `redis-server`
    started for it on its own port and in its own session: its CPU is not the
    target's. Compared with `turnout` in the same run (CPU per request with
    Redis configured within 10 % of without, PRODUCT.md §3.8)."""

    name = "turnout-redis"

    def extra(self, d):
        return 'redis: { url_env: TURNOUT_BENCH_REDIS_URL, key_prefix: "bench:" }\n'

    def extra_env(self):
        return {"TURNOUT_BENCH_REDIS_URL": f"redis://127.0.0.1:{PORTS['redis']}/0"}

    def start(self):
        d = os.path.join(self.ctx.out, self.name)
        os.makedirs(d, exist_ok=True)
        self.redis = start(["redis-server", "--bind", "127.0.0.1", "--port", str(PORTS["redis"]),
                            "--save", "", "--appendonly", "no", "--dir", d],
                           self.ctx.load_core, os.path.join(d, "redis.log"))
        wait_port(PORTS["redis"], proc=self.redis)
        super().start()

    def stop(self):
        super().stop()
        if getattr(self, "redis", None) is not None:
            stop(self.redis)
            self.redis = None


class Endpoints(Turnout):
    """Turnout with every upstream given as two `endpoints` (both on the same
    simulated provider) instead of one `base_url`: the same run measures what
    choosing an endpoint (p2c over peak EWMA, per-endpoint counters) costs."""

    name = "endpoints"

    def address(self, base):
        return (f"endpoints: [{{ name: e1, base_url: \"{base}\" }}, "
                f"{{ name: e2, base_url: \"{base}\" }}]")


class Baseline(Turnout):
    """An older Turnout build (--baseline), run exactly like `turnout`: same
    config, ports, steps and pinning, in turn with the others. Only its files
    (config, state, log) live apart, in <out>/baseline/, so neither build reads
    the other's state file."""

    name = "baseline"

    def binary(self):
        return self.ctx.baseline


class Progressive(Turnout):
    """The same build and config as `turnout` plus the audit log (one JSON
    line per request, to <out>/progressive/audit.jsonl) and shadow traffic
    on every route (every control-cohort user shadowed, at most 50 copies/s
    per route): what they cost on the request path, measured in the same run
    as `turnout` without them (PRODUCT.md §3.9, §3.11)."""

    name = "progressive"

    def split_extra(self):
        return ", shadow: { percentage: 100, max_rps: 50 }"

    def extra(self, d):
        return f"audit: {{ path: {d}/audit.jsonl, max_bytes: 200MB, keep: 1 }}\n"


class Full(TurnoutRedis):
    """Everything on the path at once: the `turnout` config (split, failover
    chain, health probes, metrics, the access log) plus `redis` configured,
    the audit log and shadow traffic, as `turnout-redis` and `progressive`
    add them one by one. The issue's bars are judged on it too."""

    name = "full"

    def split_extra(self):
        return ", shadow: { percentage: 100, max_rps: 50 }"

    def extra(self, d):
        return (super().extra(d)
                + f"audit: {{ path: {d}/audit.jsonl, max_bytes: 200MB, keep: 1 }}\n")


class LiteLLM(Target):
    name = "litellm"

    def url(self, scenario):
        return f"http://127.0.0.1:{PORTS['litellm']}/v1/chat/completions"

    def start(self):
        d = os.path.join(self.ctx.out, "litellm")
        os.makedirs(d, exist_ok=True)
        models = []
        for s in MOCKS:
            models.append(f"  - model_name: bench-{s}\n    litellm_params:\n"
                          f"      model: openai/bench-{s}\n"
                          f"      api_base: http://127.0.0.1:{PORTS['mock-' + s]}/v1\n"
                          f"      api_key: sk-bench-not-a-secret\n"
                          f"      stream_timeout: 600\n      timeout: 600")
        conf = os.path.join(d, "litellm.yaml")
        with open(conf, "w") as f:
            f.write(LITELLM_CONF.format(models="\n".join(models)))
        env = dict(os.environ)
        for k in ("DATABASE_URL", "REDIS_URL", "LITELLM_MASTER_KEY"):
            env.pop(k, None)
        env.update({
            "LITELLM_LOG": "ERROR",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
            "DISABLE_ADMIN_UI": "True",
            "NO_DOCS": "True",
            "TELEMETRY": "False",
        })
        cmd = [self.ctx.litellm, "--config", conf, "--host", "127.0.0.1",
               "--port", str(PORTS["litellm"]), "--num_workers", "1", "--run_granian"]
        self.proc = start(cmd, self.ctx.proxy_core, os.path.join(d, "litellm.log"), env=env)
        wait_port(PORTS["litellm"], timeout=180, proc=self.proc)


# --------------------------------------------------------------------------- measurements


def run_wrk(ctx, url, body_file, seconds, conns=64):
    lua = os.path.join(ctx.out, "post.lua")
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "-s", lua, url]
    if ctx.load_core is not None:
        cmd = ["taskset", "-c", str(ctx.load_core)] + cmd
    env = dict(os.environ, BENCH_BODY=body_file)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env,
                         timeout=seconds + 60).stdout
    res = {"requests": 0, "rps": 0.0, "errors": 0}
    for line in out.splitlines():
        parts = line.split()
        if "requests in" in line:
            res["requests"] = int(parts[0])
        elif line.startswith("Requests/sec:"):
            res["rps"] = float(parts[1])
        elif "Non-2xx" in line:
            res["errors"] += int(parts[-1])
        elif line.strip().startswith("Socket errors:"):
            res["errors"] += sum(int(p.strip(",")) for p in parts[3::2])
    return res


def loadgen(ctx, args, timeout):
    cmd = [ctx.loadgen] + args
    if ctx.load_core is not None:
        cmd = ["taskset", "-c", str(ctx.load_core)] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen {args[0]} failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def saturation(ctx, t, body_fast):
    url = t.url("fast")
    run_wrk(ctx, url, body_fast, 2)  # warm-up: pools, caches
    sid = t.sid()
    c0 = tree_cpu_ns(sid) if sid else 0
    r = run_wrk(ctx, url, body_fast, ctx.sat_seconds)
    c1 = tree_cpu_ns(sid) if sid else 0
    if sid and r["requests"]:
        r["cpu_us_per_req"] = (c1 - c0) / r["requests"] / 1000.0
    return r


def fixed_rate(ctx, t, body_fast, rate):
    secs = ctx.rate_seconds
    return loadgen(ctx, ["rate", "--url", t.url("fast"), "--body", body_fast,
                         "--rate", str(rate), "--duration", f"{secs}s", "--timeout", "30s"],
                   timeout=secs + 90)


def streams(ctx, t, body_stream, conc):
    secs = ctx.stream_seconds
    return loadgen(ctx, ["streams", "--url", t.url("stream"), "--body", body_stream,
                         "--concurrency", str(conc), "--duration", f"{secs}s",
                         "--timeout", "60s"], timeout=secs + 120)


def hold(ctx, t, body_slow, count, fresh_base=None):
    """Opens `count` slow streams; RSS of the target before and while they are open.

    `fresh_base` is the RSS before an earlier hold step: an allocator may keep
    the memory of that step's closed streams for reuse, which would raise this
    step's base and flatter its per-stream figure, so the lower base counts."""
    sid = t.sid()
    base = tree_rss_kb(sid)
    if fresh_base is not None:
        base = min(base, fresh_base)
    cmd = [ctx.loadgen, "hold", "--url", t.url("slow"), "--body", body_slow,
           "--count", str(count), "--ramp", "2500", "--open-timeout", f"{ctx.open_timeout}s",
           "--hold", "4s", "--timeout", "600s"]
    if ctx.load_core is not None:
        cmd = ["taskset", "-c", str(ctx.load_core)] + cmd
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    STARTED.append(p)
    try:
        line = p.stdout.readline()
        report = json.loads(line) if line.strip() else {"open": 0, "error": "no report"}
        samples = []
        for _ in range(6):
            samples.append(tree_rss_kb(sid))
            time.sleep(0.5)
        rss = max(samples)
        p.wait(timeout=60)
    finally:
        stop(p)
    report["rss_base_kb"] = base
    report["rss_open_kb"] = rss
    n = report.get("open", 0)
    report["requested"] = count
    report["kb_per_stream"] = (rss - base) / n if n else None
    # What 10,000 streams would take at this rate (for a target that held them).
    report["mb_at_10000"] = (base + 10000 * report["kb_per_stream"]) / 1024 if n else None
    # Let the target drop the upstream side before the next step.
    time.sleep(3)
    return report


def measure_saturation(ctx, t, bodies):
    log(f"{t.name}: saturation")
    return {"saturation": saturation(ctx, t, bodies["fast"])}


def measure_target(ctx, t, bodies):
    res = {}
    for rate in (200, 1000):
        log(f"{t.name}: {rate} req/s")
        res[f"rate_{rate}"] = fixed_rate(ctx, t, bodies["fast"], rate)
    for c in (5, 50):
        log(f"{t.name}: {c} concurrent streams")
        res[f"streams_{c}"] = streams(ctx, t, bodies["stream"], c)
    if t.proxy:
        for key, n in (("hold_small", ctx.holds[0]), ("hold_big", ctx.holds[-1])):
            if key == "hold_big" and len(ctx.holds) < 2:
                break
            log(f"{t.name}: hold {n} slow streams")
            earlier = res.get("hold_small", {}).get("rss_base_kb") if key == "hold_big" else None
            res[key] = hold(ctx, t, bodies["slow"], n, fresh_base=earlier)
        res["rss_idle_kb"] = tree_rss_kb(t.sid())
    return res


# --------------------------------------------------------------------------- report


def get(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d or d[p] is None:
            return None
        d = d[p]
    return d


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def spread(vals):
    vals = [v for v in vals if v is not None]
    return (min(vals), max(vals)) if vals else None


def metric_values(rounds, target, fn):
    """One value per round (fn gets that round's results of every target)."""
    out = []
    for r in rounds:
        if target in r:
            try:
                out.append(fn(r, target))
            except (TypeError, KeyError):
                out.append(None)
    return out


def added(path):
    """Target minus direct, in the same round."""
    def f(r, t):
        a, b = get(r[t], *path), get(r["direct"], *path)
        return None if a is None or b is None else a - b
    return f


def plain(path):
    return lambda r, t: get(r[t], *path)


METRICS = [
    # key, label, function, unit, lower_is_better
    ("sat_rps", "saturation req/s", plain(["saturation", "rps"]), "req/s", False),
    ("cpu_us", "proxy CPU per request", plain(["saturation", "cpu_us_per_req"]), "µs", True),
    ("add_p50_200", "added p50 @200 req/s", added(["rate_200", "latency", "p50_ms"]), "ms", True),
    ("add_p99_200", "added p99 @200 req/s", added(["rate_200", "latency", "p99_ms"]), "ms", True),
    ("add_p50_1000", "added p50 @1000 req/s", added(["rate_1000", "latency", "p50_ms"]), "ms", True),
    ("add_p99_1000", "added p99 @1000 req/s", added(["rate_1000", "latency", "p99_ms"]), "ms", True),
    ("ok_rps_1000", "served req/s @1000 offered", plain(["rate_1000", "achieved_rps"]), "req/s", False),
    ("add_ttfb_5", "added TTFB p50, 5 streams", added(["streams_5", "ttfb", "p50_ms"]), "ms", True),
    ("add_ttfb_50", "added TTFB p50, 50 streams", added(["streams_50", "ttfb", "p50_ms"]), "ms", True),
    ("add_ttfb99_50", "added TTFB p99, 50 streams", added(["streams_50", "ttfb", "p99_ms"]), "ms", True),
    ("add_total_50", "added total p50, 50 streams", added(["streams_50", "total", "p50_ms"]), "ms", True),
    ("kb_small", "RSS per held stream, {small} held", plain(["hold_small", "kb_per_stream"]), "KB", True),
    ("open_big", "streams held (of {big} opened)", plain(["hold_big", "open"]), "", False),
    ("rss_big", "RSS with {big} held", lambda r, t: (get(r[t], "hold_big", "rss_open_kb") or 0) / 1024 or None, "MB", True),
    ("kb_big", "RSS per held stream, {big} held", plain(["hold_big", "kb_per_stream"]), "KB", True),
    ("mb_10000", "RSS for 10,000 streams (projected)", plain(["hold_big", "mb_at_10000"]), "MB", True),
]


def fmt(v, unit):
    if v is None:
        return "–"
    if unit in ("req/s", "") and abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def summarize(rounds, targets, holds):
    summary = {}
    for key, label, fn, unit, lower in METRICS:
        label = label.format(small=f"{holds[0]:,}", big=f"{holds[-1]:,}")
        if len(holds) < 2 and key in ("open_big", "rss_big", "kb_big", "mb_10000"):
            continue
        row = {}
        for t in targets:
            vals = metric_values(rounds, t, fn)
            row[t] = {"median": med(vals), "spread": spread(vals), "values": vals}
        summary[key] = {"label": label, "unit": unit, "lower_is_better": lower, "by_target": row}
    return summary


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def checks(summary):
    """The issue's targets, evaluated on the medians."""
    m = lambda k, t: summary[k]["by_target"].get(t, {}).get("median")  # noqa: E731
    out = []

    def add(name, value, limit, ok):
        out.append({"check": name, "value": value, "limit": limit,
                    "pass": None if value is None else ok(value)})

    for t in ("turnout", "full"):
        add(f"saturation of {t} ≥ 0.75× nginx", ratio(m("sat_rps", t), m("sat_rps", "nginx")),
            0.75, lambda v: v >= 0.75)
        add(f"CPU/request of {t} ≤ 1.5× nginx", ratio(m("cpu_us", t), m("cpu_us", "nginx")),
            1.5, lambda v: v <= 1.5)
    add("CPU/request with Redis ≤ 1.1× without (same run)",
        ratio(m("cpu_us", "turnout-redis"), m("cpu_us", "turnout")), 1.1, lambda v: v <= 1.1)
    for k in ("add_p50_1000", "add_p99_1000"):
        tv, nv = m(k, "turnout"), m(k, "nginx")
        # Added latency below the noise floor (≤ 0.05 ms) counts as meeting the bar.
        val = None if tv is None or nv is None else (tv / max(nv, 0.05))
        add(f"{summary[k]['label']} ≤ 1.5× nginx", val, 1.5, lambda v: v <= 1.5)
    add("CPU/request with endpoints ≤ 1.05× one base_url (same run)",
        ratio(m("cpu_us", "endpoints"), m("cpu_us", "turnout")), 1.05, lambda v: v <= 1.05)
    add("added TTFB p50 at 50 streams ≤ 0.5 ms", m("add_ttfb_50", "turnout"), 0.5,
        lambda v: v <= 0.5)
    big = "kb_big" if "kb_big" in summary else "kb_small"
    for t in ("turnout", "full"):
        add(f"RSS per held stream of {t} ≤ 24 KB ({summary[big]['label']})", m(big, t), 24,
            lambda v: v <= 24)
    if "mb_10000" in summary:
        add("RSS for 10,000 streams ≤ 300 MB (projected from the largest step)",
            m("mb_10000", "turnout"), 300, lambda v: v <= 300)
    return out


def render(summary, targets, meta, chk):
    lines = []
    lines.append(f"Turnout overhead benchmark — {meta['date']} — {meta['machine']}")
    lines.append(f"command: {meta['command']}")
    lines.append(f"rounds: {meta['rounds']}; cells are medians, [min–max] over rounds; "
                 "'added' = target minus direct in the same round")
    lines.append("")
    base = "baseline" in targets
    prog = "progressive" in targets
    full = "full" in targets
    head = ["metric"] + targets + ["turnout/nginx", "litellm/turnout"]
    if base:
        head.append("turnout/baseline")
    if prog:
        head.append("progressive/turnout")
    if full:
        head.append("full/nginx")
    rows = [head]
    for key, s in summary.items():
        label = s["label"] + (f" ({s['unit']})" if s["unit"] else "")
        row = [label]
        for t in targets:
            c = s["by_target"].get(t, {})
            v, sp = c.get("median"), c.get("spread")
            cell = fmt(v, s["unit"])
            if sp and len([x for x in c.get("values", []) if x is not None]) > 1:
                cell += f" [{fmt(sp[0], s['unit'])}–{fmt(sp[1], s['unit'])}]"
            row.append(cell)
        tv = s["by_target"].get("turnout", {}).get("median")
        nv = s["by_target"].get("nginx", {}).get("median")
        lv = s["by_target"].get("litellm", {}).get("median")
        r1 = ratio(tv, nv)
        r2 = ratio(lv, tv) if s["lower_is_better"] else ratio(tv, lv)
        row.append("–" if r1 is None else f"{r1:.2f}×")
        row.append("–" if r2 is None else f"{r2:,.0f}×" if r2 >= 10 else f"{r2:.1f}×")
        if base:
            r3 = ratio(tv, s["by_target"].get("baseline", {}).get("median"))
            row.append("–" if r3 is None else f"{r3:.2f}×")
        if prog:
            r4 = ratio(s["by_target"].get("progressive", {}).get("median"), tv)
            row.append("–" if r4 is None else f"{r4:.2f}×")
        if full:
            r5 = ratio(s["by_target"].get("full", {}).get("median"), nv)
            row.append("–" if r5 is None else f"{r5:.2f}×")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    md = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    md.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += md
    lines.append("")
    lines.append("litellm/turnout: how many times better Turnout is (LiteLLM's figure over "
                 "Turnout's, or Turnout's over LiteLLM's for throughput).")
    if base:
        lines.append("turnout/baseline: Turnout's figure over the baseline build's (below 1 is "
                     "better for latency, CPU and memory, above 1 for req/s and streams held).")
    if full:
        lines.append("full/nginx: Turnout with Redis configured, the audit log and shadow "
                     "traffic on, over nginx, same run.")
    if prog:
        lines.append("progressive/turnout: Turnout with the audit log and shadow traffic on, "
                     "over Turnout without them, same run.")
    lines.append("")
    lines.append("Targets (issue): ")
    for c in chk:
        v = "–" if c["value"] is None else f"{c['value']:.2f}"
        status = {True: "PASS", False: "FAIL", None: "n/a"}[c["pass"]]
        lines.append(f"- {status}: {c['check']}: {v} (limit {c['limit']})")
    return "\n".join(lines)


# --------------------------------------------------------------------------- soak


def soak(ctx, bodies, minutes):
    t = Turnout(ctx)
    t.start()
    wait_ok(t.url("fast"), open(bodies["fast"], "rb").read(), proc=t.proc)
    secs = int(minutes * 60)
    log(f"soak: {minutes} min of 500 req/s + 50 concurrent streams through Turnout")
    cmd_rate = [ctx.loadgen, "rate", "--url", t.url("fast"), "--body", bodies["fast"],
                "--rate", "500", "--duration", f"{secs}s"]
    cmd_streams = [ctx.loadgen, "streams", "--url", t.url("stream"), "--body",
                   bodies["stream"], "--concurrency", "50", "--duration", f"{secs}s"]
    procs = []
    for c in (cmd_rate, cmd_streams):
        if ctx.load_core is not None:
            c = ["taskset", "-c", str(ctx.load_core)] + c
        p = subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             start_new_session=True)
        STARTED.append(p)
        procs.append(p)
    samples = []
    t0 = time.time()
    while time.time() - t0 < secs:
        samples.append((round(time.time() - t0), tree_rss_kb(t.sid())))
        time.sleep(10)
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=120)
            outs.append(json.loads(out.strip().splitlines()[-1]))
        except Exception as e:  # noqa: BLE001
            outs.append({"error": str(e)})
        stop(p)
    t.stop()
    # Growth: last fifth against the second fifth (after warm-up).
    n = len(samples)
    early = med([s[1] for s in samples[n // 5: 2 * n // 5]] or [samples[0][1]])
    late = med([s[1] for s in samples[4 * n // 5:]] or [samples[-1][1]])
    return {"minutes": minutes, "samples_kb": samples, "early_kb": early, "late_kb": late,
            "growth_kb": late - early, "load": outs}


# --------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--turnout", required=True)
    ap.add_argument("--loadgen", required=True)
    ap.add_argument("--litellm", help="litellm executable (omit to skip LiteLLM)")
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--baseline", help="an older turnout executable, measured as the target "
                    "'baseline' exactly like 'turnout' (omit to skip)")
    ap.add_argument("--targets", help="comma-separated, default direct,nginx,litellm,turnout,"
                    "endpoints,turnout-redis,progressive,full (and baseline with --baseline); endpoints = turnout "
                    "with two `endpoints` per upstream instead of one base_url; full = turnout + "
                    "redis + audit log + shadow")
    ap.add_argument("--soak", type=float, default=0, help="minutes of soak (Turnout only)")
    ap.add_argument("--command", default=" ".join(sys.argv))
    ctx = ap.parse_args()
    if ctx.targets is None:
        ctx.targets = ("direct,nginx,litellm,turnout,endpoints,turnout-redis,progressive,full"
                       + (",baseline" if ctx.baseline else ""))

    ctx.sat_seconds = 3 if ctx.quick else 6
    ctx.rate_seconds = 4 if ctx.quick else 8
    ctx.stream_seconds = 4 if ctx.quick else 8
    # 4,000 streams need ~8,100 descriptors in the proxy (client + upstream
    # sockets); a container's hard limit may be lower, so the big step is
    # capped to fit; the 10,000 figure is projected from it.
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        want = soft
    # The issue's memory bar is judged at 4,000 held streams; 10,000 is
    # projected from that step.
    big = min(4000, (want - 300) // 2)
    if big < 4000:
        log(f"open-files limit {want}: the big hold step is {big} streams, not 4,000")
    ctx.holds = [1000] if ctx.quick else [1000, big]
    ctx.open_timeout = 20 if ctx.quick else 40
    cores = os.cpu_count() or 1
    if cores >= 2:
        ctx.load_core, ctx.proxy_core = 0, 1
    else:
        ctx.load_core = ctx.proxy_core = None
        log("fewer than 2 cores: nothing is pinned; compare ratios only")
    os.makedirs(ctx.out, exist_ok=True)

    atexit.register(stop_all)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, f: sys.exit(128 + s))

    with open(os.path.join(ctx.out, "post.lua"), "w") as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                'local f = io.open(os.getenv("BENCH_BODY"), "rb")\n'
                'wrk.body = f:read("*a")\nf:close()\n')
    bodies = {}
    for s in MOCKS:
        path = os.path.join(ctx.out, f"body-{s}.json")
        with open(path, "wb") as f:
            f.write(chat_body(f"bench-{s}", stream=(s != "fast")))
        bodies[s] = path

    log("starting the simulated providers on core 0")
    for s, args in MOCKS.items():
        port = PORTS["mock-" + s]
        p = start([ctx.turnout, "mock", "--listen", f"127.0.0.1:{port}", "--name", f"mock-{s}"]
                  + args, ctx.load_core, os.path.join(ctx.out, f"mock-{s}.log"))
        wait_port(port, proc=p)

    if ctx.soak > 0:
        res = soak(ctx, bodies, ctx.soak)
        with open(os.path.join(ctx.out, "soak.json"), "w") as f:
            json.dump(res, f, indent=1)
        print(f"soak: {res['minutes']} min, RSS early {res['early_kb'] / 1024:.1f} MB, "
              f"late {res['late_kb'] / 1024:.1f} MB, growth {res['growth_kb'] / 1024:+.1f} MB")
        return

    classes = {"direct": Direct, "nginx": Nginx, "litellm": LiteLLM, "turnout": Turnout,
               "endpoints": Endpoints, "turnout-redis": TurnoutRedis, "baseline": Baseline,
               "progressive": Progressive, "full": Full}
    targets = [t for t in ctx.targets.split(",") if t in classes]
    if "litellm" in targets and not ctx.litellm:
        log("LiteLLM not available: skipped")
        targets.remove("litellm")
    if "baseline" in targets and not ctx.baseline:
        log("no --baseline binary: baseline skipped")
        targets.remove("baseline")
    for t in ("turnout-redis", "full"):
        if t in targets and shutil.which("redis-server") is None:
            log(f"redis-server not installed: {t} skipped")
            targets.remove(t)
    rounds = []
    for i in range(ctx.rounds):
        log(f"round {i + 1} of {ctx.rounds}")
        r = {name: {} for name in targets}
        # Saturation (throughput and CPU per request) of every target back to
        # back first, then the rest: the ratios to nginx compare runs seconds
        # apart, not minutes, and a VM's speed drifts over minutes.
        for phase in (measure_saturation, measure_target):
            for name in targets:
                if "error" in r[name]:
                    continue
                t = classes[name](ctx)
                try:
                    t.start()
                    for s in ("fast", "stream"):
                        wait_ok(t.url(s), open(bodies[s], "rb").read(), proc=t.proc)
                    r[name].update(phase(ctx, t, bodies))
                except Exception as e:  # noqa: BLE001 (one target failing must not stop the rest)
                    log(f"{name}: failed: {e}")
                    r[name]["error"] = str(e)
                finally:
                    t.stop()
                    time.sleep(2)
        rounds.append(r)
        with open(os.path.join(ctx.out, "results.json"), "w") as f:
            json.dump({"rounds": rounds}, f, indent=1)

    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()}: {cores} cores, {cpu_model()}, "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
                   f"Linux {platform.release()}",
        "command": ctx.command,
        "rounds": ctx.rounds,
        "quick": ctx.quick,
        "load_avg_at_end": os.getloadavg(),
        "versions": versions(ctx),
    }
    summary = summarize(rounds, targets, ctx.holds)
    chk = checks(summary)
    text = render(summary, targets, meta, chk)
    with open(os.path.join(ctx.out, "results.json"), "w") as f:
        json.dump({"meta": meta, "summary": summary, "checks": chk, "rounds": rounds}, f,
                  indent=1)
    with open(os.path.join(ctx.out, "results.md"), "w") as f:
        f.write(text + "\n")
    print(text)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def versions(ctx):
    v = {}
    cmds = [("turnout", [ctx.turnout, "--version"]), ("nginx", [ctx.nginx, "-v"]),
            ("wrk", ["wrk", "--version"])]
    if ctx.baseline:
        cmds.append(("baseline", [ctx.baseline, "--version"]))
    for name, cmd in cmds:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            v[name] = (p.stdout + p.stderr).strip().splitlines()[0]
        except Exception:  # noqa: BLE001
            v[name] = None
    if ctx.litellm:
        try:
            py = os.path.join(os.path.dirname(ctx.litellm), "python")
            p = subprocess.run([py, "-c", "import importlib.metadata as m;"
                                "print(m.version('litellm'), m.version('granian'))"],
                               capture_output=True, text=True, timeout=30)
            v["litellm"] = p.stdout.strip()
        except Exception:  # noqa: BLE001
            v["litellm"] = None
    return v


if __name__ == "__main__":
    main()
