#!/bin/sh
# Roll a route's split share back to 0 % on every replica, at once.
#
#   TURNOUT_ADMIN_URL="http://10.0.0.5:9090 http://10.0.0.6:9090" \
#   TURNOUT_ADMIN_TOKEN=... scripts/rollback.sh [ROUTE]
#
# Without ROUTE: every route that has a split. Prints `route: before% -> after%`
# per route and replica; exits non-zero if the rollback did not take everywhere
# (wrong token, replica unreachable, share not 0 afterwards).
# Needs only sh and curl (plus sed/tr, part of any POSIX system).
set -u
. "$(dirname "$0")/admin-lib.sh"

route="${1:-}"
fail=0
for url in $TURNOUT_ADMIN_URL; do
  if [ -n "$route" ]; then
    routes="$route"
  else
    routes=$(split_routes "$url") || { fail=1; continue; }
    [ -n "$routes" ] || { echo "$url: no route has a split" >&2; continue; }
  fi
  for r in $routes; do
    change "$url" POST "/admin/routes/$r/rollback" "" "$r" 0 || fail=1
  done
done
exit "$fail"
