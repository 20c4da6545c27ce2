#!/usr/bin/env bash
# Checks the Grafana dashboards in dashboards/*.json:
#   1. they are what scripts/gen-dashboards.py writes (no hand edits lost);
#   2. structure (scripts/promql_check.py lint): schemaVersion >= 39, the
#      ${datasource} variable and no hard-coded datasource UID, unique panel
#      ids, grid positions, queries with refId and expr, known variables;
#   3. Grafana's published schema: each dashboard is embedded as an object
#      literal typed with the `Dashboard` type of npm @grafana/schema (version
#      pinned in dashboards/schema-check/package.json) and type-checked with
#      `tsc --noEmit --strict`. Object literals get TypeScript's excess-property
#      check, so a misspelled or unknown key fails as well as a wrong type.
#      The schema's enums (color modes, threshold modes, ...) are TypeScript
#      enums, which a JSON string cannot satisfy; `Json<T>` maps each string
#      enum to the union of its values, which is what Grafana reads from JSON.
#
# Step 3 needs node and npm (npm registry); without them it is skipped with a
# notice, unless SCHEMA_CHECK=required (then it fails).
# Usage: scripts/check-dashboards.sh [DASHBOARD.json...]
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [ "$#" -gt 0 ]; then dashboards=("$@"); else dashboards=(dashboards/*.json); fi

if [ "$#" -eq 0 ]; then
  echo "== dashboards: generated files up to date"
  python3 scripts/gen-dashboards.py --check
fi

echo "== dashboards: structure"
python3 scripts/promql_check.py lint "${dashboards[@]}"

echo "== dashboards: Grafana schema (@grafana/schema Dashboard type, tsc)"
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  if [ "${SCHEMA_CHECK:-}" = required ]; then
    echo "FAIL: node/npm not found and SCHEMA_CHECK=required" >&2
    exit 1
  fi
  echo "SKIP: node/npm not found (install nodejs and npm, or set SCHEMA_CHECK=required to fail)"
  exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/turnout-schema.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp dashboards/schema-check/package.json dashboards/schema-check/package-lock.json "$work/"
if ! (cd "$work" && npm ci --no-audit --no-fund --loglevel=error >npm.log 2>&1); then
  cat "$work/npm.log" >&2
  echo "FAIL: npm ci in $work" >&2
  exit 1
fi

# One .ts file per dashboard; the JSON starts on line 1, so tsc's line numbers
# are the JSON file's line numbers.
header='import type { Dashboard } from "@grafana/schema"; type Json<T> = T extends string ? (string extends T ? string : `${T}`) : T extends number | boolean | null | undefined ? T : T extends ReadonlyArray<infer U> ? Array<Json<U>> : T extends object ? { [K in keyof T]: Json<T[K]> } : T; export const dashboard: Json<Dashboard> = '
files=()
for d in "${dashboards[@]}"; do
  name="$(basename "$d" .json)"
  { printf '%s' "$header"; cat "$d"; printf ';\n'; } >"$work/$name.ts"
  files+=("$work/$name.ts")
done
if ! (cd "$work" && ./node_modules/.bin/tsc --noEmit --strict --skipLibCheck --pretty false \
      --target es2022 --module nodenext --moduleResolution nodenext "${files[@]}" >tsc.log 2>&1); then
  # Show dashboards/NAME.json(LINE,COL) instead of the temp file.
  sed -e "s#^\([A-Za-z0-9_-]*\)\.ts(#dashboards/\1.json(#" "$work/tsc.log" | cut -c1-400 >&2
  echo "FAIL: a dashboard does not match Grafana's Dashboard type" >&2
  exit 1
fi
echo "ok: ${#dashboards[@]} dashboards match @grafana/schema $(node -p "require('$work/node_modules/@grafana/schema/package.json').version")"
