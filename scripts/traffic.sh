#!/bin/sh
# Set a route's split share (percent of users sent to the split target first).
#
#   TURNOUT_ADMIN_URL=http://127.0.0.1:9090 TURNOUT_ADMIN_TOKEN=... scripts/traffic.sh ROUTE PERCENT
#
# TURNOUT_ADMIN_URL may list several replicas separated by spaces. Prints
# `route: before% -> after%` per replica; exits non-zero if the change did not
# take everywhere. Needs only sh and curl (plus sed/tr).
set -u
. "$(dirname "$0")/admin-lib.sh"

if [ $# -ne 2 ]; then
  echo "usage: $0 ROUTE PERCENT" >&2
  exit 2
fi
fail=0
for url in $TURNOUT_ADMIN_URL; do
  change "$url" PUT "/admin/routes/$1/split" "{\"percentage\": $2}" "$1" "$2" || fail=1
done
exit "$fail"
