#!/usr/bin/env python3
"""Writes dashboards/{overview,migration,cost}.json (Grafana dashboard JSON).

The JSON files are committed; this script is their source. Edit here, run
`python3 scripts/gen-dashboards.py`, commit both. `scripts/check-dashboards.sh`
fails when the committed JSON differs from what this script writes
(`--check`). Stdlib only.

Conventions (checked by scripts/promql_check.py lint):
- every panel and query uses the `${datasource}` variable, never a fixed UID;
- label filters on variables are regex matchers (`route=~"$route"`), so the
  "All" value `.*` and multi-value selections work;
- metric names and labels are those of src/metrics.rs.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "dashboards"
SCHEMA_VERSION = 41  # Grafana 12.x; Grafana >= 10.4 (39) loads it as well.
DS = {"type": "prometheus", "uid": "${datasource}"}

# Selectors reused by the queries.
RU = 'route=~"$route",upstream=~"$upstream"'
U = 'upstream=~"$upstream"'
R = 'route=~"$route"'
RI = "$__rate_interval"


class Layout:
    """Places panels left to right on Grafana's 24-column grid."""

    def __init__(self):
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1

    def id(self):
        i = self.next_id
        self.next_id += 1
        return i

    def place(self, w, h):
        if self.x + w > 24:
            self.newline()
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def newline(self):
        self.y += self.row_h
        self.x = 0
        self.row_h = 0


def target(expr, legend="__auto", ref="A", instant=False):
    t = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
        "refId": ref,
    }
    return t


def targets(*pairs, instant=False):
    """pairs of (expr, legend) → targets with refIds A, B, C, ..."""
    return [
        target(e, l, chr(ord("A") + i), instant=instant) for i, (e, l) in enumerate(pairs)
    ]


def thresholds(*steps):
    """steps: (color, value) with the first value None."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def timeseries(lay, title, desc, tgts, unit="short", w=12, h=8, stack=False,
               bars=False, maxv=None, overrides=None):
    custom = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 80 if bars else 10,
        "gradientMode": "none",
        "showPoints": "never",
        "spanNulls": False,
        "axisSoftMin": 0,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    defaults = {
        "color": {"mode": "palette-classic"},
        "custom": custom,
        "unit": unit,
        "thresholds": thresholds(("green", None)),
    }
    if maxv is not None:
        defaults["max"] = maxv
    return {
        "datasource": DS,
        "description": desc,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "gridPos": lay.place(w, h),
        "id": lay.id(),
        "options": {
            "legend": {
                "calcs": ["mean", "max", "lastNotNull"],
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": tgts,
        "title": title,
        "type": "timeseries",
    }


def stat(lay, title, desc, tgts, unit="short", w=4, h=4, steps=None, decimals=None,
         text_mode="auto", mappings=None, graph=True):
    defaults = {
        "color": {"mode": "thresholds"},
        "unit": unit,
        "thresholds": thresholds(*(steps or [("green", None)])),
        "mappings": mappings or [],
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "datasource": DS,
        "description": desc,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "gridPos": lay.place(w, h),
        "id": lay.id(),
        "options": {
            "colorMode": "value",
            "graphMode": "area" if graph else "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": text_mode,
            "showPercentChange": False,
            "wideLayout": True,
        },
        "targets": tgts,
        "title": title,
        "type": "stat",
    }


def bargauge(lay, title, desc, tgts, unit="short", w=12, h=8):
    return {
        "datasource": DS,
        "description": desc,
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "palette-classic"},
                "unit": unit,
                "min": 0,
                "thresholds": thresholds(("green", None)),
            },
            "overrides": [],
        },
        "gridPos": lay.place(w, h),
        "id": lay.id(),
        "options": {
            "displayMode": "gradient",
            "orientation": "horizontal",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showUnfilled": True,
            "valueMode": "color",
            "namePlacement": "auto",
            "sizing": "auto",
            "minVizHeight": 16,
            "minVizWidth": 8,
            "maxVizHeight": 300,
        },
        "targets": tgts,
        "title": title,
        "type": "bargauge",
    }


def state_timeline(lay, title, desc, tgts, mappings, steps, w=12, h=8):
    return {
        "datasource": DS,
        "description": desc,
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "thresholds"},
                "custom": {"fillOpacity": 80, "lineWidth": 0},
                "mappings": mappings,
                "thresholds": thresholds(*steps),
            },
            "overrides": [],
        },
        "gridPos": lay.place(w, h),
        "id": lay.id(),
        "options": {
            "alignValue": "left",
            "mergeValues": True,
            "rowHeight": 0.9,
            "showValue": "auto",
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "single", "sort": "none"},
        },
        "targets": tgts,
        "title": title,
        "type": "state-timeline",
    }


def row(lay, title, collapsed=False, panels=None):
    lay.newline()
    r = {
        "collapsed": collapsed,
        "gridPos": lay.place(24, 1),
        "id": lay.id(),
        "panels": panels or [],
        "title": title,
        "type": "row",
    }
    lay.newline()
    return r


def value_map(entries):
    """entries: (value, text, color) → one Grafana value mapping."""
    return [{
        "type": "value",
        "options": {
            str(v): {"text": t, "color": c, "index": i} for i, (v, t, c) in enumerate(entries)
        },
    }]


def datasource_var():
    return {
        "hide": 0,
        "includeAll": False,
        "label": "Data source",
        "multi": False,
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
        "type": "datasource",
    }


def query_var(name, label, query, multi=True, include_all=True):
    v = {
        "datasource": DS,
        "hide": 0,
        "includeAll": include_all,
        "label": label,
        "multi": multi,
        "name": name,
        "options": [],
        "query": query,
        "refresh": 2,
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
        "type": "query",
    }
    if include_all:
        v["allValue"] = ".*"
        v["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return v


def dashboard(uid, title, desc, panels, variables, tags=("turnout",)):
    return {
        "annotations": {
            "list": [{
                "builtIn": 1,
                "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                "enable": True,
                "hide": True,
                "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts",
                "type": "dashboard",
            }]
        },
        "description": desc,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [{
            "asDropdown": True,
            "icon": "external link",
            "includeVars": False,
            "keepTime": True,
            "tags": ["turnout"],
            "targetBlank": False,
            "title": "Turnout dashboards",
            "tooltip": "",
            "type": "dashboards",
            "url": "",
        }],
        "liveNow": False,
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": list(tags),
        "templating": {"list": variables},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


def quantiles(metric, sel, by=""):
    """p50/p95/p99 of a latency histogram, aggregated over everything but `by`."""
    grp = f"le, {by}" if by else "le"
    return [
        (f"histogram_quantile({q}, sum by ({grp}) (rate({metric}_bucket{{{sel}}}[{RI}])))",
         f"p{int(q * 100)}" + (f" {{{{{by}}}}}" if by else ""))
        for q in (0.5, 0.95, 0.99)
    ]


# ---------------------------------------------------------------- overview ---

def overview():
    lay = Layout()
    req = f"turnout_requests_total{{{RU}}}"
    req5 = f'turnout_requests_total{{{RU},code=~"5.."}}'
    p = []

    p.append(row(lay, "Traffic"))
    p.append(stat(lay, "Requests / s", "Client requests per second (all routes and upstreams selected).",
                  targets((f"sum(rate({req}[{RI}]))", "req/s")), unit="reqps"))
    p.append(stat(lay, "Client 5xx ratio",
                  "Share of client responses with a 5xx status: what clients saw after failover.",
                  targets((f"(sum(rate({req5}[{RI}])) or vector(0)) / sum(rate({req}[{RI}]))", "5xx")),
                  unit="percentunit", decimals=2,
                  steps=[("green", None), ("orange", 0.01), ("red", 0.05)]))
    p.append(stat(lay, "Failovers / s", "Requests moved on from one upstream to the next.",
                  targets((f"sum(rate(turnout_failovers_total{{{R}}}[{RI}])) or vector(0)", "failovers/s")),
                  unit="reqps", steps=[("green", None), ("orange", 0.1), ("red", 1)]))
    p.append(stat(lay, "Upstreams usable",
                  "Upstreams usable for routing (turnout_upstream_healthy = 1) out of all upstreams.",
                  targets((f"sum(max by (upstream) (turnout_upstream_healthy{{{U}}}))", "usable"),
                          (f"count(max by (upstream) (turnout_upstream_healthy{{{U}}}))", "total")),
                  graph=False))
    p.append(stat(lay, "Open streams", "Streams open right now (SSE and WebSocket) and WebSocket connections.",
                  targets(("sum(turnout_active_streams)", "streams"),
                          ("sum(turnout_websocket_connections)", "ws connections"))))
    p.append(stat(lay, "Uptime", "Time since the oldest Turnout process started; version in the legend.",
                  targets(("time() - max(turnout_start_time_seconds)", "uptime"),
                          ("count by (version) (turnout_build_info)", "{{version}}")),
                  unit="dtdurations", graph=False, text_mode="value_and_name"))

    p.append(timeseries(lay, "Requests / s by upstream",
                        "Client requests by the upstream that served them (`none`: no upstream tried).",
                        targets((f"sum by (upstream) (rate({req}[{RI}]))", "{{upstream}}")),
                        unit="reqps", stack=True, w=8))
    p.append(timeseries(lay, "Requests / s by status code", "Client responses by HTTP status.",
                        targets((f"sum by (code) (rate({req}[{RI}]))", "{{code}}")),
                        unit="reqps", stack=True, w=8))
    p.append(timeseries(
        lay, "Client 5xx ratio by route",
        "Share of 5xx responses per route, after failover.",
        targets((f"(sum by (route) (rate({req5}[{RI}])) or sum by (route) (rate({req}[{RI}])) * 0)"
                 f" / sum by (route) (rate({req}[{RI}]))", "{{route}}")),
        unit="percentunit", w=8))

    p.append(row(lay, "Latency"))
    p.append(timeseries(lay, "Request duration p50 / p95 / p99",
                        "Whole request as the client sees it (selected routes and upstreams).",
                        targets(*quantiles("turnout_request_duration_seconds", RU)), unit="s", w=8))
    p.append(timeseries(lay, "Request duration p95 by upstream", "",
                        targets(*quantiles("turnout_request_duration_seconds", RU, "upstream")[1:2]),
                        unit="s", w=8))
    p.append(timeseries(
        lay, "Mean request duration by upstream", "",
        targets((f"sum by (upstream) (rate(turnout_request_duration_seconds_sum{{{RU}}}[{RI}]))"
                 f" / sum by (upstream) (rate(turnout_request_duration_seconds_count{{{RU}}}[{RI}]))",
                 "{{upstream}}")), unit="s", w=8))
    p.append(timeseries(lay, "Time to first token p50 / p95 / p99",
                        "First SSE event for streams; whole body for non-streaming requests.",
                        targets(*quantiles("turnout_time_to_first_token_seconds", RU)), unit="s", w=8))
    p.append(timeseries(lay, "Time to first token p95 by upstream", "",
                        targets(*quantiles("turnout_time_to_first_token_seconds", RU, "upstream")[1:2]),
                        unit="s", w=8))
    p.append(timeseries(lay, "Time to first token p95 by transport", "HTTP (SSE) against WebSocket.",
                        targets(*quantiles("turnout_time_to_first_token_seconds", RU, "transport")[1:2]),
                        unit="s", w=8))

    p.append(row(lay, "Upstreams and health"))
    p.append(state_timeline(
        lay, "Upstream state",
        "Health state per upstream: healthy, unhealthy (active probes failing) or ejected "
        "(removed for a while after failing live traffic).",
        targets((f'max by (upstream) (turnout_upstream_state{{{U},state="healthy"}} * 0'
                 f' or turnout_upstream_state{{{U},state="unhealthy"}} * 1'
                 f' or turnout_upstream_state{{{U},state="ejected"}} * 2)', "{{upstream}}")),
        value_map([(0, "healthy", "green"), (1, "unhealthy", "red"), (2, "ejected", "orange")]),
        [("green", None), ("red", 1), ("orange", 2)]))
    p.append(state_timeline(
        lay, "Usable for routing", "turnout_upstream_healthy: 1 when the upstream is usable.",
        targets((f"min by (upstream) (turnout_upstream_healthy{{{U}}})", "{{upstream}}")),
        value_map([(1, "usable", "green"), (0, "down", "red")]),
        [("red", None), ("green", 1)]))
    p.append(timeseries(
        lay, "Upstream error ratio (attempts)",
        "Share of attempts to each upstream that did not succeed, including those hidden from "
        "clients by failover.",
        targets((f'(sum by (upstream) (rate(turnout_upstream_attempts_total{{{U},outcome!="ok"}}[{RI}]))'
                 f" or sum by (upstream) (rate(turnout_upstream_attempts_total{{{U}}}[{RI}])) * 0)"
                 f" / sum by (upstream) (rate(turnout_upstream_attempts_total{{{U}}}[{RI}]))",
                 "{{upstream}}")), unit="percentunit", w=8))
    p.append(timeseries(lay, "Attempts / s by outcome", "",
                        targets((f"sum by (upstream, outcome) (rate(turnout_upstream_attempts_total{{{U}}}[{RI}]))",
                                 "{{upstream}} {{outcome}}")), unit="reqps", w=8))
    p.append(timeseries(lay, "Probe latency p95", "Active health probe latency.",
                        targets((f"histogram_quantile(0.95, sum by (le, upstream) "
                                 f"(rate(turnout_probe_duration_seconds_bucket{{{U}}}[{RI}])))",
                                 "{{upstream}}")), unit="s", w=8))
    p.append(timeseries(lay, "Probes / s by result", "",
                        targets((f"sum by (upstream, result) (rate(turnout_probes_total{{{U}}}[{RI}]))",
                                 "{{upstream}} {{result}}")), unit="reqps", w=8))
    p.append(timeseries(lay, "Ejections and state changes",
                        "Passive ejections and health state changes in each interval.",
                        targets((f"sum by (upstream) (increase(turnout_ejections_total{{{U}}}[{RI}]))",
                                 "ejected {{upstream}}"),
                                (f"sum by (upstream, state) (increase(turnout_health_transitions_total{{{U}}}[{RI}]))",
                                 "{{upstream}} → {{state}}")), bars=True, w=8))

    p.append(row(lay, "Failover"))
    p.append(timeseries(lay, "Failovers / s by path", "From which upstream to which.",
                        targets((f"sum by (from, to) (rate(turnout_failovers_total{{{R}}}[{RI}]))",
                                 "{{from}} → {{to}}")), unit="reqps", w=8))
    p.append(timeseries(lay, "Failovers / s by reason", "",
                        targets((f"sum by (reason) (rate(turnout_failovers_total{{{R}}}[{RI}]))",
                                 "{{reason}}")), unit="reqps", w=8))
    p.append(timeseries(
        lay, "Failovers per request by route",
        "Failovers divided by client requests: above ~0.2 is a failover storm.",
        targets((f"(sum by (route) (rate(turnout_failovers_total{{{R}}}[{RI}]))"
                 f" or sum by (route) (rate(turnout_requests_total{{{R}}}[{RI}])) * 0)"
                 f" / sum by (route) (rate(turnout_requests_total{{{R}}}[{RI}]))", "{{route}}")),
        unit="percentunit", w=8))

    details = Layout()
    details.y = lay.y + lay.row_h + 1  # just below the row header
    details.next_id = 100
    inner = [
        timeseries(details, "Retries / s by route", "Second and later upstream attempts.",
                   targets((f"sum by (route) (rate(turnout_retries_total{{{R}}}[{RI}]))", "{{route}}")),
                   unit="reqps", w=8),
        timeseries(details, "Retry budget exhausted / s",
                   "Retries refused because the retry budget was spent.",
                   targets((f"sum by (route) (rate(turnout_retry_budget_exhausted_total{{{R}}}[{RI}]))",
                            "{{route}}")), unit="reqps", w=8),
        timeseries(details, "Requests / s by transport", "HTTP against WebSocket.",
                   targets((f"sum by (transport) (rate({req}[{RI}]))", "{{transport}}")),
                   unit="reqps", w=8),
    ]
    p.append(row(lay, "Retries (details)", collapsed=True, panels=inner))

    return dashboard(
        "turnout-overview", "Turnout / Overview",
        "Requests, errors, latency, time to first token, upstream health and failovers.",
        p,
        [datasource_var(),
         query_var("route", "Route", "label_values(turnout_requests_total, route)"),
         query_var("upstream", "Upstream",
                   'label_values(turnout_requests_total{route=~"$route"}, upstream)')])


# --------------------------------------------------------------- migration ---

def side(upstream_var):
    """Queries for one side (primary or target) of a migration."""
    sel = f'route=~"$route",upstream=~"${upstream_var}"'
    att = f'upstream=~"${upstream_var}"'
    return {
        "rps": f"sum(rate(turnout_requests_total{{{sel}}}[{RI}]))",
        "err": (f'(sum(rate(turnout_upstream_attempts_total{{{att},outcome!="ok"}}[{RI}])) or vector(0))'
                f" / sum(rate(turnout_upstream_attempts_total{{{att}}}[{RI}]))"),
        "p95": (f"histogram_quantile(0.95, sum by (le) "
                f"(rate(turnout_request_duration_seconds_bucket{{{sel}}}[{RI}])))"),
        "ttft": (f"histogram_quantile(0.95, sum by (le) "
                 f"(rate(turnout_time_to_first_token_seconds_bucket{{{sel}}}[{RI}])))"),
        "cost": (f"sum(rate(turnout_cost_usd_total{{{sel}}}[{RI}]))"
                 f' / sum(rate(turnout_requests_total{{{sel},code=~"2.."}}[{RI}])) * 1000'),
    }


def migration():
    lay = Layout()
    prim, targ = side("primary"), side("target")
    split = f'turnout_split_percentage{{{R}}}'
    req = f'turnout_requests_total{{{R}}}'
    p = []

    p.append(row(lay, "Split"))
    p.append(stat(lay, "Split now", "Effective share of users sent to the split target (0 after a rollback).",
                  targets((f"max({split})", "split")), unit="percent", w=6,
                  steps=[("blue", None)]))
    p.append(stat(lay, "Served by target",
                  "Share of this route's requests answered by the target upstream.",
                  targets((f'sum(rate(turnout_requests_total{{{R},upstream=~"$target"}}[{RI}]))'
                           f" / sum(rate({req}[{RI}])) * 100", "served")), unit="percent", w=6,
                  steps=[("blue", None)]))
    p.append(stat(lay, "Rollbacks in range", "Split rollbacks by trigger (manual or auto) in the time range.",
                  targets((f"sum by (trigger) (increase(turnout_rollbacks_total{{{R}}}[$__range]))",
                           "{{trigger}}")), w=6, decimals=0, text_mode="value_and_name",
                  steps=[("green", None), ("red", 0.5)], graph=False))
    p.append(stat(lay, "Failovers away from target / s",
                  "Requests that the target failed and that moved on to the primary or a fallback.",
                  targets((f'sum(rate(turnout_failovers_total{{{R},from=~"$target"}}[{RI}])) or vector(0)',
                           "failovers/s")), unit="reqps", w=6,
                  steps=[("green", None), ("orange", 0.1), ("red", 1)]))
    p.append(timeseries(lay, "Split percentage",
                        "Configured share (the gauge) against the share actually served by the target.",
                        targets((f"max by (route) ({split})", "split % {{route}}"),
                                (f'sum(rate(turnout_requests_total{{{R},upstream=~"$target"}}[{RI}]))'
                                 f" / sum(rate({req}[{RI}])) * 100", "served by target %")),
                        unit="percent", w=12))
    p.append(timeseries(lay, "Rollbacks", "Split rollbacks per interval, by trigger.",
                        targets((f"sum by (route, trigger) (increase(turnout_rollbacks_total{{{R}}}[{RI}]))",
                                 "{{route}} {{trigger}}")), bars=True, w=12))

    p.append(row(lay, "Primary ($primary) vs target ($target)"))
    for name, q in (("Primary", prim), ("Target", targ)):
        p.append(stat(lay, f"{name}: requests / s", "", targets((q["rps"], "req/s")), unit="reqps", w=3))
        p.append(stat(lay, f"{name}: error ratio",
                      "Attempts to this upstream that failed (all routes), before failover.",
                      targets((q["err"], "errors")), unit="percentunit", w=3, decimals=1,
                      steps=[("green", None), ("orange", 0.05), ("red", 0.2)]))
        p.append(stat(lay, f"{name}: p95 latency", "", targets((q["p95"], "p95")), unit="s", w=3))
        p.append(stat(lay, f"{name}: p95 TTFT", "", targets((q["ttft"], "p95 ttft")), unit="s", w=3))

    def pair(title, key, unit, desc=""):
        return timeseries(lay, title, desc,
                          targets((prim[key], "primary"), (targ[key], "target")), unit=unit, w=12)

    p.append(pair("Requests / s", "rps", "reqps"))
    p.append(pair("Error ratio (upstream attempts)", "err", "percentunit",
                  "What drives automatic rollback: the target's failed attempts."))
    p.append(pair("Request duration p95", "p95", "s"))
    p.append(pair("Time to first token p95", "ttft", "s"))
    p.append(pair("USD per 1000 successful requests", "cost", "currencyUSD"))
    p.append(timeseries(lay, "Why target requests failed over", "Failovers from the target, by reason.",
                        targets((f'sum by (reason) (rate(turnout_failovers_total{{{R},from=~"$target"}}[{RI}]))',
                                 "{{reason}}")), unit="reqps", w=12))

    p.extend(progressive(lay))

    return dashboard(
        "turnout-migration", "Turnout / Migration",
        "A split migration: share, rollbacks, and the target against the primary side by side.",
        p,
        [datasource_var(),
         query_var("route", "Route", "label_values(turnout_split_percentage, route)",
                   multi=False, include_all=False),
         query_var("primary", "Primary",
                   'label_values(turnout_requests_total{route=~"$route"}, upstream)',
                   multi=False, include_all=False),
         query_var("target", "Split target",
                   'label_values(turnout_requests_total{route=~"$route"}, upstream)',
                   multi=False, include_all=False)])


def progressive(lay):
    """The ramp, the gates (target cohort vs control cohort) and the shadow comparison."""
    p = []
    pairs = f"turnout_shadow_pairs_total{{{R}}}"
    ratio = f"turnout_shadow_latency_ratio_bucket{{{R}}}"
    p.append(row(lay, "Ramp, gates and shadow"))
    p.append(stat(lay, "Ramp step", "The current ramp step's percentage (0 before the ramp started).",
                  targets((f"max(turnout_ramp_step{{{R}}})", "step")), unit="percent", w=4,
                  steps=[("blue", None)]))
    p.append(stat(lay, "Gate verdict", "1 on the gate's current verdict: pass, fail or insufficient "
                  "(too few requests in a cohort).",
                  targets((f"max by (verdict) (turnout_gate_verdict{{{R}}})", "{{verdict}}")),
                  w=8, decimals=0, text_mode="value_and_name", graph=False,
                  steps=[("text", None), ("green", 1)]))
    p.append(stat(lay, "Shadow: same shape",
                  "Share of primary/shadow pairs whose answers had the same shape (both succeeded, "
                  "same finish reason, same tool calls).",
                  targets((f'sum(rate(turnout_shadow_pairs_total{{{R},shape="same"}}[{RI}]))'
                           f" / sum(rate({pairs}[{RI}]))", "same shape")),
                  unit="percentunit", w=6, decimals=1,
                  steps=[("red", None), ("orange", 0.9), ("green", 0.98)]))
    p.append(stat(lay, "Shadow: latency ratio p50", "Shadow total latency over the primary's, median of the pairs.",
                  targets((f"histogram_quantile(0.5, sum by (le) (rate({ratio}[{RI}])))", "p50")),
                  w=6, decimals=2, steps=[("green", None), ("orange", 1.5), ("red", 3)]))
    p.append(timeseries(lay, "Gate error rate: target vs control",
                        "Error rate of each cohort over the gate window. The gate fails when the target's "
                        "exceeds the control's by more than max_error_rate_increase.",
                        targets((f"max by (cohort) (turnout_gate_error_rate{{{R}}})", "{{cohort}}")),
                        unit="percentunit", w=12))
    p.append(timeseries(lay, "Gate p95 latency: target vs control",
                        "p95 latency of each cohort over the gate window (streams: time to first token). "
                        "The gate fails when target / control exceeds max_latency_ratio.",
                        targets((f"max by (cohort) (turnout_gate_latency_p95_seconds{{{R}}})", "{{cohort}}")),
                        unit="s", w=12))
    p.append(timeseries(lay, "Gate window: requests per cohort",
                        "Requests of each cohort in the gate window; below min_requests the verdict is insufficient.",
                        targets((f"max by (cohort) (turnout_gate_requests{{{R}}})", "{{cohort}}")), w=12))
    p.append(timeseries(lay, "Ramp step and split", "The ramp's step against the effective share.",
                        targets((f"max(turnout_ramp_step{{{R}}})", "ramp step %"),
                                (f"max(turnout_split_percentage{{{R}}})", "split %")),
                        unit="percent", w=12))
    p.append(timeseries(lay, "Shadow requests / s",
                        "Shadow copies by outcome: ok, error, dropped (over max_rps).",
                        targets((f"sum by (outcome) (rate(turnout_shadow_requests_total{{{R}}}[{RI}]))",
                                 "{{outcome}}")), unit="reqps", w=12))
    p.append(timeseries(lay, "Shadow latency ratio (shadow / primary)",
                        "Per pair: the shadow's total latency over the primary's.",
                        targets((f"histogram_quantile(0.5, sum by (le) (rate({ratio}[{RI}])))", "p50"),
                                (f"histogram_quantile(0.95, sum by (le) (rate({ratio}[{RI}])))", "p95")),
                        w=12))
    p.append(timeseries(lay, "Shadow pairs / s by shape", "Pairs compared, same or different shape.",
                        targets((f"sum by (shape) (rate({pairs}[{RI}]))", "{{shape}}")), unit="reqps", w=12))
    p.append(timeseries(lay, "Shadow spend (not in the cost totals)",
                        "USD and tokens of shadow copies, counted apart from served traffic.",
                        targets((f"sum(rate(turnout_shadow_cost_usd_total{{{R}}}[{RI}])) * 3600", "USD / hour"),
                                (f"sum by (type) (rate(turnout_shadow_tokens_total{{{R}}}[{RI}]))",
                                 "{{type}} tokens / s")),
                        w=12))
    return p


# -------------------------------------------------------------------- cost ---

def cost():
    lay = Layout()
    c = f"turnout_cost_usd_total{{{RU}}}"
    b = f"turnout_baseline_cost_usd_total{{{RU}}}"
    tok = f"turnout_tokens_total{{{U}}}"
    ok = f'turnout_requests_total{{{RU},code=~"2.."}}'
    p = []

    p.append(row(lay, "Spend"))
    p.append(stat(lay, "Spent in range", "USD at the serving upstream's prices.",
                  targets((f"sum(increase({c}[$__range]))", "USD")), unit="currencyUSD", w=5,
                  decimals=2, graph=False))
    p.append(stat(lay, "At primary prices", "The same tokens priced at each route primary's prices.",
                  targets((f"sum(increase({b}[$__range]))", "USD")), unit="currencyUSD", w=5,
                  decimals=2, graph=False))
    p.append(stat(lay, "Saved in range", "At primary prices minus spent: what the split and fallbacks saved "
                  "(negative: they cost more).",
                  targets((f"sum(increase({b}[$__range])) - sum(increase({c}[$__range]))", "USD")),
                  unit="currencyUSD", w=5, decimals=2, graph=False,
                  steps=[("red", None), ("green", 0)]))
    p.append(stat(lay, "Saved %", "",
                  targets((f"(1 - sum(increase({c}[$__range])) / sum(increase({b}[$__range]))) * 100",
                           "saved")), unit="percent", w=4, decimals=1, graph=False,
                  steps=[("red", None), ("green", 0)]))
    p.append(stat(lay, "Tokens in range", "Prompt and completion tokens (selected upstreams).",
                  targets((f"sum(increase({tok}[$__range]))", "tokens")), unit="short", w=5,
                  graph=False))

    p.append(timeseries(lay, "USD / hour by upstream", "",
                        targets((f"sum by (upstream) (rate({c}[{RI}])) * 3600", "{{upstream}}")),
                        unit="currencyUSD", stack=True, w=12))
    p.append(timeseries(lay, "Saved USD / hour by route", "At primary prices minus spent.",
                        targets((f"(sum by (route) (rate({b}[{RI}])) - sum by (route) (rate({c}[{RI}]))) * 3600",
                                 "{{route}}")), unit="currencyUSD", w=12))
    p.append(bargauge(lay, "Spent in range by upstream and model", "",
                      targets((f"sum by (upstream, model) (increase({c}[$__range]))",
                               "{{upstream}} / {{model}}"), instant=True), unit="currencyUSD"))
    p.append(bargauge(lay, "USD per 1000 successful requests", "By upstream, over the time range.",
                      targets((f"sum by (upstream) (increase({c}[$__range]))"
                               f" / sum by (upstream) (increase({ok}[$__range])) * 1000", "{{upstream}}"),
                              instant=True), unit="currencyUSD"))

    p.append(row(lay, "Tokens"))
    p.append(timeseries(lay, "Tokens / s by upstream and type", "",
                        targets((f"sum by (upstream, type) (rate({tok}[{RI}]))", "{{upstream}} {{type}}")),
                        unit="short", stack=True, w=12))
    p.append(timeseries(lay, "Tokens / s by model", "Model names not priced in the config show as `other`.",
                        targets((f"sum by (model) (rate({tok}[{RI}]))", "{{model}}")),
                        unit="short", stack=True, w=12))
    p.append(timeseries(
        lay, "Completion tokens per successful request", "",
        targets((f'sum by (upstream) (rate(turnout_tokens_total{{{U},type="completion"}}[{RI}]))'
                 f" / sum by (upstream) (rate({ok}[{RI}]))", "{{upstream}}")), unit="short", w=12))
    p.append(bargauge(lay, "Tokens in range by upstream and type", "",
                      targets((f"sum by (upstream, type) (increase({tok}[$__range]))",
                               "{{upstream}} {{type}}"), instant=True)))

    return dashboard(
        "turnout-cost", "Turnout / Cost",
        "Tokens and USD per upstream, and what the split and fallbacks saved against the primary's prices.",
        p,
        [datasource_var(),
         query_var("route", "Route", "label_values(turnout_cost_usd_total, route)"),
         query_var("upstream", "Upstream",
                   'label_values(turnout_tokens_total, upstream)')])


def render():
    return {
        "overview.json": overview(),
        "migration.json": migration(),
        "cost.json": cost(),
    }


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, dash in render().items():
        text = json.dumps(dash, indent=2, ensure_ascii=False) + "\n"
        path = OUT / name
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("out of date (run python3 scripts/gen-dashboards.py): " + ", ".join(stale),
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
