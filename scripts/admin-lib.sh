# Shared by rollback.sh and traffic.sh: admin calls with curl, JSON read with sed.
: "${TURNOUT_ADMIN_URL:=http://127.0.0.1:9090}"
if [ -z "${TURNOUT_ADMIN_TOKEN:-}" ]; then
  echo "TURNOUT_ADMIN_TOKEN is not set" >&2
  exit 2
fi

# json_field KEY: the scalar value of "KEY" in the JSON on stdin (first match).
json_field() {
  sed -n "s/.*\"$1\":\(\"[^\"]*\"\|[-0-9.eE+]*\|null\).*/\1/p" | head -n 1 | tr -d '"'
}

# pct N: 10.0 -> 10, 12.50 -> 12.5
pct() {
  echo "$1" | sed -e 's/\(\.[0-9]*[1-9]\)0*$/\1/' -e 's/\.0*$//'
}

# call URL METHOD PATH [BODY]: prints the body, then the status code on its own last line.
call() {
  if [ -n "${4:-}" ]; then
    curl -sS --max-time 10 -X "$2" -H "Authorization: Bearer $TURNOUT_ADMIN_TOKEN" \
      -H 'content-type: application/json' --data "$4" -w '\n%{http_code}' "$1$3"
  else
    curl -sS --max-time 10 -X "$2" -H "Authorization: Bearer $TURNOUT_ADMIN_TOKEN" -w '\n%{http_code}' "$1$3"
  fi
}

# split_routes URL: names of the routes that have a split.
split_routes() {
  out=$(call "$1" GET /admin/status) || { echo "$1: unreachable" >&2; return 1; }
  code=$(printf '%s\n' "$out" | tail -n 1)
  if [ "$code" != 200 ]; then
    echo "$1: /admin/status answered HTTP $code" >&2
    return 1
  fi
  # Keys are sorted: "routes" comes right before "upstreams"; each route object
  # starts with "fallbacks" (a list of names), then "name".
  printf '%s\n' "$out" | sed -n 's/.*"routes":\[\(.*\)\],"upstreams".*/\1/p' |
    sed 's/},{"fallbacks"/}\n{"fallbacks"/g' | grep '"split":{' |
    sed -n 's/^{"fallbacks":\[[^]]*\],"name":"\([^"]*\)".*/\1/p'
}

# change URL METHOD PATH BODY ROUTE EXPECTED: one admin change, checked and printed.
change() {
  out=$(call "$1" "$2" "$3" "$4") || { echo "$5: FAILED ($1 unreachable)"; return 1; }
  code=$(printf '%s\n' "$out" | tail -n 1)
  body=$(printf '%s\n' "$out" | sed '$d')
  if [ "$code" != 200 ]; then
    msg=$(printf '%s' "$body" | json_field message)
    echo "$5: FAILED ($1 answered HTTP $code: $msg)"
    return 1
  fi
  before=$(pct "$(printf '%s' "$body" | json_field previous_percentage)")
  after=$(pct "$(printf '%s' "$body" | json_field percentage)")
  echo "$5: $before% -> $after% ($1)"
  [ "$after" = "$(pct "$6")" ] || { echo "$5: FAILED (share is $after%, expected $6%)"; return 1; }
}
