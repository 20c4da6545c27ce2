#!/usr/bin/env python3
"""Unit tests of scripts/check-layers.py on tiny fake crates (no cargo needed).

Run: python3 -m unittest discover -s scripts -p 'test_check_layers.py'
"""
import json
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "check-layers.py"

# low (0) < mid (1) < high (2); peer_a and peer_b share layer 1
LAYERS = json.dumps([
    {"name": "base", "modules": ["low"]},
    {"name": "middle", "modules": ["mid", "peer_a", "peer_b"]},
    {"name": "top", "modules": ["high"]},
])


class Crate:
    """A fake crate in a temp dir: {relative path under src/: source}."""

    def __init__(self, files: dict):
        self.tmp = tempfile.TemporaryDirectory()
        self.src = Path(self.tmp.name) / "src"
        for rel, text in files.items():
            p = self.src / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")

    def run(self, *args, layers=LAYERS):
        cmd = [sys.executable, str(SCRIPT), "--src", str(self.src)]
        if layers is not None:
            cmd += ["--layers", layers]
        p = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout + p.stderr

    def close(self):
        self.tmp.cleanup()


BASE = {
    "lib.rs": """
        //! A fake crate.
        pub mod high;
        pub mod low;
        pub mod mid;
        pub mod peer_a;
        pub mod peer_b;
    """,
    "low.rs": "pub struct L;\n",
    "mid.rs": """
        use crate::low::L;

        pub fn m(_: L) {}
    """,
    "peer_a.rs": "use crate::peer_b::B;\npub struct A(B);\n",
    "peer_b.rs": "pub struct B;\n",
    "high.rs": """
        use crate::{low::L, mid};

        pub fn h() { mid::m(L); crate::peer_a::A(crate::peer_b::B); }
    """,
}


class CheckLayers(unittest.TestCase):
    def crate(self, **changes):
        files = dict(BASE)
        for rel, text in changes.items():
            rel = rel.replace("__", "/") + ".rs"
            if text is None:
                files.pop(rel, None)
            else:
                files[rel] = text
        c = Crate(files)
        self.addCleanup(c.close)
        return c

    def assert_fails(self, code, out, *needles):
        self.assertEqual(code, 1, out)
        for n in needles:
            self.assertIn(n, out)
        self.assertIn("FAILED", out.splitlines()[-1])

    def test_clean_crate_passes(self):
        code, out = self.crate().run()
        self.assertEqual(code, 0, out)
        self.assertEqual(
            out.strip(),
            "check-layers: 6 modules, 6 references, 3 layers: no upward import, no cycle",
        )

    def test_upward_import_fails_with_file_and_line(self):
        code, out = self.crate(low="pub struct L;\n\nuse crate::high::h;\n").run()
        self.assert_fails(
            code, out,
            "src/low.rs:3: upward import: low (layer 0 base) -> high (layer 2 top) via crate::high::h",
            "1 upward import",
        )

    def test_inline_path_is_a_reference(self):
        code, out = self.crate(low="pub fn l() {\n    crate::mid::m(crate::low::L);\n}\npub struct L;\n").run()
        self.assert_fails(code, out, "src/low.rs:2: upward import: low (layer 0 base) -> mid (layer 1 middle) via crate::mid::m")

    def test_grouped_multiline_use_is_parsed(self):
        low = """
            pub struct L;

            use crate::{
                mid::m,
                high::{
                    h as hh,
                    self,
                },
            };
        """
        code, out = self.crate(low=low).run()
        self.assert_fails(
            code, out,
            "src/low.rs:4: upward import: low (layer 0 base) -> mid (layer 1 middle) via crate::mid::m",
            "src/low.rs:6: upward import: low (layer 0 base) -> high (layer 2 top) via crate::high::h",
            "src/low.rs:7: upward import: low (layer 0 base) -> high (layer 2 top) via crate::high",
            "3 upward imports",
        )

    def test_super_reference_resolves(self):
        # low/deep/leaf.rs: super::super::super is the crate root
        code, out = self.crate(
            low=None,
            low__mod="pub mod deep;\npub struct L;\n",
            low__deep__mod="pub mod leaf;\n",
            low__deep__leaf="use super::super::L;\nuse super::super::super::high::h;\n",
        ).run()
        self.assert_fails(
            code, out,
            "src/low/deep/leaf.rs:2: upward import: low::deep::leaf (layer 0 base) -> high (layer 2 top) "
            "via super::super::super::high::h",
        )
        self.assertNotIn("leaf.rs:1", out)

    def test_super_in_test_module_is_the_file_itself(self):
        mid = """
            use crate::low::L;
            pub fn m(_: L) {}

            #[cfg(test)]
            mod tests {
                use super::*;
                use super::super::peer_b::B;

                #[test]
                fn t() { let _ = B; m(L) }
            }
        """
        code, out = self.crate(mid=mid).run()
        self.assertEqual(code, 0, out)
        self.assertIn("7 references", out)  # the test's super::super::peer_b, not super::* (mid itself)

    def test_comments_and_strings_are_ignored(self):
        low = """
            //! Nothing here imports crate::high, see [`crate::high::h`].
            /// [`crate::high`] is above us.
            // use crate::high::h;
            /* a block comment: use crate::high::h;
               /* nested */ crate::mid::m */
            pub struct L;
            pub const S: &str = "use crate::high::h;";
            pub const R: &str = r#"crate::high::h "quoted" "#;
            pub const C: char = '"';
            pub const O: char = '{';
            pub fn f<'a>(s: &'a str) -> &'a str { s }
        """
        code, out = self.crate(low=low).run()
        self.assertEqual(code, 0, out)

    def test_literals_do_not_hide_the_code_after_them(self):
        # each literal, misread, would open a string or a brace that swallows the `use`
        literals = [
            "pub const C: char = '\"';",
            "pub const O: char = '{';",
            "pub const E: char = '\\\"';",
            'pub const S: &str = "a \\" quote";',
            'pub const R: &str = r#"a " quote"#;',
            "pub fn f<'a>(s: &'a str) -> &'a str { s }",
            "/* an odd \" in a comment */",
        ]
        for lit in literals:
            with self.subTest(lit):
                code, out = self.crate(low=f"pub struct L;\n{lit}\nuse crate::high::h;\n").run()
                self.assert_fails(code, out, "src/low.rs:3: upward import: low (layer 0 base) -> high (layer 2 top)")

    def test_cycle_between_same_layer_modules(self):
        code, out = self.crate(peer_b="use crate::peer_a::A;\npub struct B;\n").run()
        self.assert_fails(
            code, out,
            "cycle: peer_a -> peer_b -> peer_a  [peer_a -> peer_b at src/peer_a.rs:1; "
            "peer_b -> peer_a at src/peer_b.rs:1]",
            "0 upward imports, 1 cycle",
        )

    def test_cycle_inside_a_depth_two_folder(self):
        code, out = self.crate(
            mid=None,
            mid__mod="pub mod ws;\npub fn m(_: crate::low::L) {}\n",
            mid__ws__mod="pub mod a;\npub mod b;\n",
            mid__ws__a="use super::b::B;\npub struct A;\n",
            mid__ws__b="pub struct B;\npub fn f() -> super::a::A { super::a::A }\n",
        ).run()
        self.assert_fails(
            code, out,
            "cycle inside mid::ws: mid::ws::a -> mid::ws::b -> mid::ws::a  [mid::ws::a -> mid::ws::b at "
            "src/mid/ws/a.rs:1; mid::ws::b -> mid::ws::a at src/mid/ws/b.rs:2 (+1 more)]",
        )

    def test_parent_and_child_are_not_a_cycle(self):
        code, out = self.crate(
            mid=None,
            mid__mod="pub mod child;\nuse child::C;\npub use self::child::C as D;\npub struct M;\npub fn m(_: crate::low::L) {}\n",
            mid__child="use super::M;\npub struct C(crate::mid::M);\n",
        ).run()
        self.assertEqual(code, 0, out)

    def test_top_level_cycle_through_a_child(self):
        # peer_a::x -> peer_b -> peer_a: no cycle at depth 2 (peer_a -> peer_a::x is the parent edge)
        code, out = self.crate(
            peer_a=None,
            peer_a__mod="pub mod x;\npub struct A;\n",
            peer_a__x="use crate::peer_b::B;\n",
            peer_b="pub struct B(crate::peer_a::A);\n",
        ).run()
        self.assert_fails(code, out, "cycle between top-level modules: peer_a -> peer_b -> peer_a")

    def test_missing_table_entry(self):
        code, out = self.crate(extra="use crate::low::L;\n").run()
        self.assert_fails(
            code, out,
            "src/extra.rs: module 'extra' is not in the layer table: add it to the layer table",
            "1 module missing from the layer table",
        )

    def test_stale_table_entry(self):
        code, out = self.crate(peer_a=None, high="pub fn h() {}\n").run()
        self.assert_fails(code, out, "layer table: 'peer_a' (layer 1 middle) has no module in src/", "1 stale table entry")

    def test_unresolved_path_is_reported(self):
        code, out = self.crate(mid="pub fn m(_: crate::gone::L) {}\n").run()
        self.assert_fails(code, out, "src/mid.rs:1: unresolved reference: crate::gone::L")

    def test_root_items_and_exported_macros_resolve(self):
        code, out = self.crate(
            lib=BASE["lib.rs"] + "pub use low::L as Root;\n",
            low="#[macro_export]\nmacro_rules! mk { () => {} }\npub struct L;\n",
            mid="pub fn m(_: crate::Root) { crate::mk!(); }\n",
        ).run()
        self.assertEqual(code, 0, out)

    def test_layers_as_a_dict_and_a_file(self):
        table = {"low": 0, "mid": 1, "peer_a": 1, "peer_b": 1, "high": 2}
        c = self.crate()
        code, out = c.run(layers=json.dumps(table))
        self.assertEqual(code, 0, out)
        f = Path(c.tmp.name) / "layers.json"
        f.write_text(LAYERS)
        code, out = c.run(layers=str(f))
        self.assertEqual(code, 0, out)

    def test_graph(self):
        code, out = self.crate().run("--graph")
        self.assertEqual(code, 0, out)
        lines = out.splitlines()
        self.assertIn("# layer 2 top", lines)
        self.assertIn("high -> low 1", lines)
        self.assertIn("high -> peer_a 1", lines)
        self.assertIn("peer_a -> peer_b 1", lines)
        self.assertIn("low (imports no other module)", lines)

    def test_help(self):
        c = Crate({"lib.rs": ""})
        self.addCleanup(c.close)
        code, out = c.run("--help", layers=None)
        self.assertEqual(code, 0)
        self.assertIn("no upward import and no cycle", out)

    def test_builtin_table_names_each_module_once(self):
        code, out = self.crate().run(layers=None)  # the built-in table, on the fake crate
        self.assertEqual(code, 1)
        self.assertIn("module 'low' is not in the layer table", out)
        self.assertIn("layer table: 'app' (layer 7 assembly) has no module", out)
        self.assertNotIn("duplicate", out)


if __name__ == "__main__":
    unittest.main()
