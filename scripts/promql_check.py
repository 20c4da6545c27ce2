#!/usr/bin/env python3
"""Checks Turnout's Grafana dashboards and Prometheus rules (stdlib only).

Subcommands
  lint  DASHBOARD.json...
      Structural checks that need no Prometheus: schemaVersion >= 39, the
      `${datasource}` variable (no hard-coded datasource UID), unique panel ids,
      grid positions, every query has a refId and an expr, every variable used
      in an expr is defined, variables are used with regex matchers (=~).

  list  DASHBOARD.json...
      Prints every PromQL expression found (panels, nested rows, variables),
      after variable substitution.

  check --prom URL [--var NAME=VALUE]... [--rules-file alerts.yml]
        [--expect-alert NAME]... DASHBOARD.json...
      Evaluates every expression through Prometheus's HTTP API (instant query)
      and fails when one errors, returns no series, or names a metric
      (`turnout_*`) that Prometheus does not have. With --rules-file, the rules
      loaded by that Prometheus (GET /api/v1/rules) are checked the same way;
      their number must match the rules in the file, and none may be in error.

How expressions are found
  Dashboards: every string under a key `expr`, anywhere in the JSON (panels,
  panels nested in rows, annotations), plus the `query` of every templating
  variable of type `query`: `label_values(SELECTOR, LABEL)` is evaluated as
  `count by (LABEL) (SELECTOR)`.
  Rules: the `query` of every rule Prometheus loaded from the file, i.e. the
  expression as Prometheus itself parsed it.

Variables
  `$__rate_interval` -> 1m, `$__interval` -> 15s, `$__range` -> 5m (and the
  _s / _ms forms); every dashboard variable (`$name`, `${name}`,
  `${name:fmt}`, `[[name]]`) -> `.*` unless given with --var NAME=VALUE.

Alert conditions
  An alert expression is empty while the alert does not fire. So a top-level
  comparison with a number literal is removed before evaluation:
  `A / B > 0.05` is evaluated as `A / B`, `X == 0` as `X`, `0.5 < X` as `X`.
  "Top-level" means outside any (), {}, [] and string; an expression wrapped
  whole in parentheses is unwrapped first; each operand of a top-level
  `and` / `or` / `unless` is treated the same way. A comparison between two
  vectors is kept as written. So "returns no series" checks that the metrics
  behind the condition exist.
"""
import argparse
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
}
METRIC_RE = re.compile(r"(?<![\w:])(turnout_[A-Za-z0-9_:]*)")
VAR_RE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]")
NUMBER_RE = re.compile(
    r"^[+-]?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|0x[0-9a-fA-F]+|inf|nan)$",
    re.IGNORECASE,
)
COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
SET_OPS = ("and", "or", "unless")


# ------------------------------------------------------------ extraction ---

class Expr:
    def __init__(self, source, raw, kind="panel"):
        self.source = source  # where it was found, for messages
        self.raw = raw  # as written
        self.kind = kind  # panel | variable | rule
        self.query = raw  # what is sent to Prometheus


def load_dashboard(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def dashboard_exprs(path, dash):
    """Every expression of one dashboard, with a readable source."""
    name = Path(path).name
    out = []

    def walk(node, where):
        if isinstance(node, dict):
            here = where
            if isinstance(node.get("title"), str) and "type" in node:
                here = where + [node["title"]]
            expr = node.get("expr")
            if isinstance(expr, str):
                ref = node.get("refId")
                label = " › ".join(here) + (f" [{ref}]" if ref else "")
                out.append(Expr(f"{name}: {label}", expr))
            for key, value in node.items():
                if key == "templating":
                    continue
                walk(value, here)
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    walk(dash, [])
    for var in (dash.get("templating") or {}).get("list") or []:
        if var.get("type") != "query":
            continue
        q = var.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if not isinstance(q, str) or not q.strip():
            continue
        converted = convert_variable_query(q)
        if converted is None:
            print(f"note: {name}: variable ${var.get('name')}: {q!r} is not checked "
                  "(only label_values(SELECTOR, LABEL) and query_result(EXPR) are)",
                  file=sys.stderr)
            continue
        e = Expr(f"{name}: variable ${var.get('name')}", converted, kind="variable")
        out.append(e)
    return out


def convert_variable_query(q):
    q = q.strip()
    m = re.match(r"^label_values\((.*)\)$", q, re.S)
    if m:
        inner = m.group(1)
        parts = split_top_level(inner, ",")
        if len(parts) == 2 and parts[0].strip():
            return f"count by ({parts[1].strip()}) ({parts[0].strip()})"
        return None
    m = re.match(r"^query_result\((.*)\)$", q, re.S)
    if m:
        return m.group(1)
    return None


def split_top_level(text, sep):
    parts, depth, cur, quote, i = [], 0, [], None, 0
    while i < len(text):
        c = text[i]
        if quote:
            cur.append(c)
            if c == "\\" and i + 1 < len(text):
                cur.append(text[i + 1])
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
            cur.append(c)
        elif c in "({[":
            depth += 1
            cur.append(c)
        elif c in ")}]":
            depth -= 1
            cur.append(c)
        elif c == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def variables_in(expr):
    return {next(g for g in m.groups() if g) for m in VAR_RE.finditer(expr)}


def substitute(expr, values):
    def repl(m):
        name = next(g for g in m.groups() if g)
        if name in BUILTINS:
            return BUILTINS[name]
        return values.get(name, ".*")

    return VAR_RE.sub(repl, expr)


def strip_strings(expr):
    return re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)


# ------------------------------------------------- alert condition removal ---

def top_level_tokens(expr):
    """Yields (index, operator) for comparisons and set operators at depth 0."""
    depth, quote, i, n = 0, None, 0, len(expr)
    while i < n:
        c = expr[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
            i += 1
            continue
        if c in "\"'`":
            quote = c
        elif c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif depth == 0:
            two = expr[i:i + 2]
            if two in ("==", "!=", ">=", "<="):
                yield i, two
                i += 2
                continue
            if c in "<>":
                yield i, c
            elif c.isalpha() and (i == 0 or not (expr[i - 1].isalnum() or expr[i - 1] in "_:")):
                m = re.match(r"[A-Za-z_][A-Za-z0-9_:]*", expr[i:])
                word = m.group(0)
                if word in SET_OPS:
                    yield i, word
                i += len(word)
                continue
        i += 1


def unwrap_parens(expr):
    e = expr.strip()
    while e.startswith("(") and e.endswith(")"):
        depth = 0
        for i, c in enumerate(e):
            depth += c == "("
            depth -= c == ")"
            if depth == 0 and i < len(e) - 1:
                return e
        e = e[1:-1].strip()
    return e


def strip_modifiers(rhs):
    """Removes `bool` and vector-matching modifiers at the start of an operand."""
    rhs = rhs.strip()
    while True:
        m = re.match(r"^(bool|on|ignoring|group_left|group_right)\b\s*", rhs)
        if not m:
            return rhs
        rhs = rhs[m.end():]
        if m.group(1) != "bool" and rhs.startswith("("):
            depth = 0
            for i, c in enumerate(rhs):
                depth += c == "("
                depth -= c == ")"
                if depth == 0:
                    rhs = rhs[i + 1:].strip()
                    break


def strip_condition(expr):
    """`A > 0.05` -> `A`; see the module docstring."""
    e = unwrap_parens(expr)
    toks = list(top_level_tokens(e))
    sets = [(i, op) for i, op in toks if op in SET_OPS]
    if sets:
        pieces, last = [], 0
        for i, op in sets:
            pieces.append(strip_condition(e[last:i]))
            pieces.append(op)
            last = i + len(op)
        pieces.append(strip_condition(e[last:]))
        return " ".join(p.strip() for p in pieces)
    comps = [(i, op) for i, op in toks if op in COMPARISONS]
    if len(comps) != 1:
        return e
    i, op = comps[0]
    lhs, rhs = e[:i].strip(), strip_modifiers(e[i + len(op):])
    if NUMBER_RE.match(unwrap_parens(rhs)):
        return lhs
    if NUMBER_RE.match(unwrap_parens(lhs)):
        return rhs
    return e


# ----------------------------------------------------------------- lint ---

def lint(paths):
    problems, uids, titles = [], {}, {}
    for path in paths:
        name = Path(path).name
        try:
            dash = load_dashboard(path)
        except (OSError, ValueError) as e:
            problems.append(f"{name}: not valid JSON: {e}")
            continue

        def bad(msg):
            problems.append(f"{name}: {msg}")

        sv = dash.get("schemaVersion")
        if not isinstance(sv, int) or sv < 39:
            bad(f"schemaVersion {sv!r}: expected an integer >= 39")
        for key, seen in (("uid", uids), ("title", titles)):
            v = dash.get(key)
            if not isinstance(v, str) or not v:
                bad(f"{key}: missing")
            elif v in seen:
                bad(f"{key} {v!r} also used by {seen[v]}")
            else:
                seen[v] = name
        if isinstance(dash.get("uid"), str) and len(dash["uid"]) > 40:
            bad("uid: longer than 40 characters")

        variables = (dash.get("templating") or {}).get("list") or []
        var_names = {v.get("name") for v in variables}
        if not any(v.get("name") == "datasource" and v.get("type") == "datasource"
                   and v.get("query") == "prometheus" for v in variables):
            bad("templating: expected a variable `datasource` of type datasource, query prometheus")

        def check_ds(node, where):
            if isinstance(node, dict):
                ds = node.get("datasource")
                if ds is not None:
                    if not isinstance(ds, dict):
                        bad(f"{where}: datasource {ds!r}: expected an object {{type, uid}}")
                    elif ds.get("uid") not in ("${datasource}", "$datasource", "-- Grafana --"):
                        bad(f"{where}: hard-coded datasource uid {ds.get('uid')!r}; "
                            "use ${datasource}")
                for k, v in node.items():
                    check_ds(v, where + "/" + k)
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    check_ds(v, f"{where}[{i}]")

        check_ds(dash, "")

        ids = set()

        def check_panel(p, where):
            pid = p.get("id")
            if not isinstance(pid, int):
                bad(f"{where}: panel without an integer id")
            elif pid in ids:
                bad(f"{where}: duplicate panel id {pid}")
            else:
                ids.add(pid)
            gp = p.get("gridPos") or {}
            if not all(isinstance(gp.get(k), int) for k in "hwxy"):
                bad(f"{where}: gridPos needs integer h, w, x, y")
            elif gp["x"] < 0 or gp["w"] < 1 or gp["x"] + gp["w"] > 24 or gp["h"] < 1:
                bad(f"{where}: gridPos {gp} outside the 24-column grid")
            if p.get("type") == "row":
                for i, child in enumerate(p.get("panels") or []):
                    check_panel(child, f"{where} › {child.get('title', i)}")
                return
            if p.get("type") == "text":
                return
            tg = p.get("targets") or []
            if not tg:
                bad(f"{where}: panel has no queries")
            refs = set()
            for t in tg:
                ref = t.get("refId")
                if not ref or ref in refs:
                    bad(f"{where}: query with a missing or duplicate refId {ref!r}")
                refs.add(ref)
                if not isinstance(t.get("expr"), str) or not t["expr"].strip():
                    bad(f"{where} [{ref}]: empty expr")

        for p in dash.get("panels") or []:
            check_panel(p, p.get("title", "?"))

        # No two top-level panels may overlap.
        cells = {}
        for p in dash.get("panels") or []:
            gp = p.get("gridPos") or {}
            if not all(isinstance(gp.get(k), int) for k in "hwxy"):
                continue
            for x in range(gp["x"], gp["x"] + gp["w"]):
                for y in range(gp["y"], gp["y"] + gp["h"]):
                    other = cells.setdefault((x, y), p.get("title"))
                    if other != p.get("title"):
                        bad(f"panels {other!r} and {p.get('title')!r} overlap at x={x} y={y}")
                        break
                else:
                    continue
                break

        for e in dashboard_exprs(path, dash):
            for v in variables_in(e.raw):
                if v not in var_names and v not in BUILTINS:
                    bad(f"{e.source}: unknown variable ${v}")
            for m in re.finditer(r'\w+\s*(=|!=)\s*"[^"]*\$', e.raw):
                bad(f"{e.source}: variable used with {m.group(1)!r}; use =~ or !~ so that "
                    "All (.*) and multi-value selections work")
            if not METRIC_RE.search(strip_strings(e.raw)) and e.kind != "variable":
                bad(f"{e.source}: no turnout_* metric in {e.raw!r}")
    return problems


# ---------------------------------------------------------------- query ---

class Prometheus:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def get(self, path, **params):
        q = urllib.parse.urlencode(params)
        req = urllib.request.Request(f"{self.url}{path}?{q}")
        try:
            with urllib.request.urlopen(req, timeout=15) as rsp:
                body = json.load(rsp)
        except urllib.error.HTTPError as e:
            try:
                body = json.load(e)
            except ValueError:
                return {"status": "error", "error": f"HTTP {e.code}"}
        except (urllib.error.URLError, OSError, ValueError) as e:
            return {"status": "error", "error": str(e)}
        return body

    def query(self, expr):
        return self.get("/api/v1/query", query=expr)

    def metric_names(self):
        body = self.get("/api/v1/label/__name__/values")
        if body.get("status") != "success":
            raise SystemExit(f"cannot list metric names: {body.get('error')}")
        return set(body["data"])


def evaluate(prom, e, names):
    """Returns None when the expression is fine, else the reason."""
    missing = sorted(set(METRIC_RE.findall(strip_strings(e.query))) - names)
    if missing:
        return "unknown metric " + ", ".join(missing) + " (not exposed by the scraped target)"
    body = prom.query(e.query)
    if body.get("status") != "success":
        return f"query error: {body.get('errorType', '')} {body.get('error', body)}".strip()
    data = body.get("data") or {}
    kind = data.get("resultType")
    if kind in ("vector", "matrix") and not data.get("result"):
        return "no series"
    return None


def count_rules_in_file(path):
    """Rules in a Prometheus rules file: lines `- alert:` or `- record:`."""
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if re.match(r"^\s*-\s*(alert|record)\s*:", line):
                n += 1
    return n


def rule_exprs(prom, rules_file):
    body = prom.get("/api/v1/rules")
    if body.get("status") != "success":
        raise SystemExit(f"cannot list rules: {body.get('error')}")
    out, errors = [], []
    fname = Path(rules_file).name
    for g in body["data"]["groups"]:
        if Path(g.get("file", "")).name != fname:
            continue
        for r in g["rules"]:
            src = f"{fname}: {g['name']} › {r['name']}"
            if r.get("health") == "err":
                errors.append(f"{src}: rule evaluation error: {r.get('lastError')}")
            e = Expr(src, r["query"], kind="rule")
            if r.get("type") == "alerting":
                e.query = strip_condition(r["query"])
            out.append(e)
    expected = count_rules_in_file(rules_file)
    if len(out) != expected:
        errors.append(f"{fname}: Prometheus loaded {len(out)} rules, the file has {expected}")
    return out, errors


def check(args):
    values = {}
    for kv in args.var:
        k, _, v = kv.partition("=")
        values[k] = v
    prom = Prometheus(args.prom)
    names = prom.metric_names()
    exprs = []
    for path in args.dashboards:
        for e in dashboard_exprs(path, load_dashboard(path)):
            e.query = substitute(e.raw, values)
            exprs.append(e)
    failures = []
    if args.rules_file:
        rexprs, rerrors = rule_exprs(prom, args.rules_file)
        exprs += rexprs
        failures += rerrors
    passed = 0
    for e in exprs:
        why = evaluate(prom, e, names)
        if why is None:
            passed += 1
            if args.verbose:
                print(f"ok    {e.source}")
        else:
            failures.append(f"{e.source}: {why}\n      {e.query}")
    for name in args.expect_alert:
        body = prom.get("/api/v1/alerts")
        states = [a.get("state") for a in (body.get("data") or {}).get("alerts", [])
                  if a.get("labels", {}).get("alertname") == name]
        if any(s in ("firing", "pending") for s in states):
            passed += 1
            if args.verbose:
                print(f"ok    alert {name} is {'/'.join(sorted(set(states)))}")
        else:
            failures.append(f"alert {name}: expected pending or firing, found none")
    used = set()
    for e in exprs:
        used |= set(METRIC_RE.findall(strip_strings(e.query)))
    unused = sorted(n for n in names if n.startswith("turnout_") and n not in used)
    if unused and args.verbose:
        print("note: metrics exposed but used by no dashboard or rule: " + ", ".join(unused))
    for f in failures:
        print(f"FAIL  {f}")
    print(f"{passed} passed, {len(failures)} failed")
    return 1 if failures or passed == 0 else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("lint")
    p.add_argument("dashboards", nargs="+")
    p = sub.add_parser("list")
    p.add_argument("--var", action="append", default=[])
    p.add_argument("dashboards", nargs="+")
    p = sub.add_parser("strip")
    p.add_argument("expr")
    p = sub.add_parser("check")
    p.add_argument("--prom", required=True)
    p.add_argument("--var", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--rules-file")
    p.add_argument("--expect-alert", action="append", default=[], metavar="ALERTNAME")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("dashboards", nargs="+")
    args = ap.parse_args()

    if args.cmd == "lint":
        problems = lint(args.dashboards)
        for pr in problems:
            print(f"FAIL  {pr}")
        print(f"{len(args.dashboards) - len({p.split(':')[0] for p in problems})} passed, "
              f"{len({p.split(':')[0] for p in problems})} failed")
        return 1 if problems else 0
    if args.cmd == "list":
        values = dict(kv.partition("=")[::2] for kv in args.var)
        for path in args.dashboards:
            for e in dashboard_exprs(path, load_dashboard(path)):
                print(f"{e.source}\n    {substitute(e.raw, values)}")
        return 0
    if args.cmd == "strip":
        print(strip_condition(args.expr))
        return 0
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
