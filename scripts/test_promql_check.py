#!/usr/bin/env python3
"""Unit tests of scripts/promql_check.py (no Prometheus needed).

Run: python3 -m unittest discover -s scripts -p 'test_promql_check.py'
"""
import copy
import json
import os
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import promql_check as pc  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted(str(p) for p in (ROOT / "dashboards").glob("*.json"))


class StripCondition(unittest.TestCase):
    def test_comparison_with_a_number_is_removed(self):
        cases = {
            "a / b > 0.05": "a / b",
            "turnout_upstream_healthy == 0": "turnout_upstream_healthy",
            'up{job="turnout"} == 0': 'up{job="turnout"}',
            "0.5 < x": "x",
            "x >= bool 1e3": "x",
            "x != -1": "x",
            "(sum(rate(a[5m])) > 1)": "sum(rate(a[5m]))",
            "histogram_quantile(0.95, sum by (le) (rate(x[5m]))) > 30":
                "histogram_quantile(0.95, sum by (le) (rate(x[5m])))",
        }
        for expr, want in cases.items():
            self.assertEqual(pc.strip_condition(expr), want, expr)

    def test_each_operand_of_a_set_operator(self):
        self.assertEqual(pc.strip_condition("a > 1 and on (r) b < 2"), "a and on (r) b")
        self.assertEqual(pc.strip_condition("a > 1 or b"), "a or b")

    def test_nested_and_vector_comparisons_are_kept(self):
        for expr in ("a > b", "count(x == 0)", 'x{code=~"5.."} / y', "sum(a > 1) + b"):
            self.assertEqual(pc.strip_condition(expr), expr)

    def test_operators_inside_strings_and_matchers_are_ignored(self):
        self.assertEqual(pc.strip_condition('x{a!="1>2",b=~"c|d"} < 3'), 'x{a!="1>2",b=~"c|d"}')


class Variables(unittest.TestCase):
    def test_substitution(self):
        e = 'rate(x{route=~"$route",u=~"${upstream}",t=~"[[target]]"}[$__rate_interval])'
        self.assertEqual(pc.substitute(e, {"target": "sim-target"}),
                         'rate(x{route=~".*",u=~".*",t=~"sim-target"}[1m])')
        self.assertEqual(pc.substitute("increase(x[$__range])", {}), "increase(x[5m])")

    def test_label_values(self):
        self.assertEqual(pc.convert_variable_query('label_values(m{a=~"$b"}, upstream)'),
                         'count by (upstream) (m{a=~"$b"})')
        self.assertIsNone(pc.convert_variable_query("label_values(upstream)"))
        self.assertEqual(pc.convert_variable_query("query_result(up)"), "up")


class Extraction(unittest.TestCase):
    def test_every_target_including_nested_rows(self):
        for path in DASHBOARDS:
            dash = pc.load_dashboard(path)
            want = []

            def walk(panels):
                for p in panels:
                    want.extend(t["expr"] for t in p.get("targets", []))
                    walk(p.get("panels", []))

            walk(dash["panels"])
            got = [e.raw for e in pc.dashboard_exprs(path, dash) if e.kind == "panel"]
            self.assertEqual(sorted(got), sorted(want), path)
            self.assertTrue(want)

    def test_overview_has_a_collapsed_row_with_panels(self):
        dash = pc.load_dashboard(str(ROOT / "dashboards" / "overview.json"))
        rows = [p for p in dash["panels"] if p["type"] == "row" and p["collapsed"]]
        self.assertTrue(rows and rows[0]["panels"])

    def test_metric_names(self):
        e = 'sum(rate(turnout_a_total{x="turnout_not_a_metric"}[1m])) / turnout_b_bucket'
        self.assertEqual(pc.METRIC_RE.findall(pc.strip_strings(e)), ["turnout_a_total", "turnout_b_bucket"])


class Lint(unittest.TestCase):
    def lint_modified(self, change):
        dash = copy.deepcopy(pc.load_dashboard(DASHBOARDS[0]))
        change(dash)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "x.json")
            with open(path, "w") as f:
                json.dump(dash, f)
            return pc.lint([path])

    def test_committed_dashboards_pass(self):
        self.assertEqual(pc.lint(DASHBOARDS), [])

    def test_hard_coded_datasource_uid(self):
        def change(d):
            d["panels"][1]["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
        self.assertTrue(any("hard-coded datasource uid" in p for p in self.lint_modified(change)))

    def test_equality_matcher_on_a_variable(self):
        def change(d):
            d["panels"][1]["targets"][0]["expr"] = 'sum(turnout_requests_total{route="$route"})'
        self.assertTrue(any("use =~" in p for p in self.lint_modified(change)))

    def test_unknown_variable(self):
        def change(d):
            d["panels"][1]["targets"][0]["expr"] = 'sum(turnout_requests_total{route=~"$nope"})'
        self.assertTrue(any("unknown variable $nope" in p for p in self.lint_modified(change)))

    def test_duplicate_panel_id(self):
        def change(d):
            d["panels"][2]["id"] = d["panels"][1]["id"]
        self.assertTrue(any("duplicate panel id" in p for p in self.lint_modified(change)))

    def test_old_schema_version(self):
        def change(d):
            d["schemaVersion"] = 36
        self.assertTrue(any("schemaVersion" in p for p in self.lint_modified(change)))


if __name__ == "__main__":
    unittest.main()
