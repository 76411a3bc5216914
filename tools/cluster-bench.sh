#!/usr/bin/env bash
# Cluster figures for docs/PERFORMANCE.md and docs/scaling.md, in one run:
#
#  1. The highest call rate with 0 failed calls (SIPp, INVITE/180/200/ACK/BYE/200, no media,
#     the hold agent, no recording) for three set-ups, which take turns at each rate so that
#     the machine's noise hits them alike:
#       direct   SIPp -> one voxline node, SQLite store (the single-node default)
#       pg       SIPp -> one voxline node on PostgreSQL ([store] url, [cluster])
#       cluster  SIPp -> Kamailio (deploy/kamailio/kamailio.cfg) -> three nodes on PostgreSQL
#     On one 2-core machine this shows the overhead of the proxy hop and the shared store,
#     not scaling: every process shares the same two cores.
#  2. Database statements per call (pg_stat_statements) for a run of CALLS_DB calls through
#     the cluster, minus what the idle nodes run meanwhile (heartbeats, polls), and the
#     PostgreSQL connections each node holds.
#
#   cargo build --release && bash tools/cluster-bench.sh
#   RATES="100 200 400" SECONDS_PER_RATE=5 bash tools/cluster-bench.sh
#
# Needs sipp, kamailio and PostgreSQL (Debian's postgresql). Everything runs on 127.0.0.1
# with bounded call counts; the PostgreSQL server, Kamailio and the voxline nodes started
# here are stopped by PID at the end. As root, PostgreSQL runs as the postgres user.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VOXLINE_BIN:-target/release/voxline}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v sipp >/dev/null || { echo "sipp missing: apt-get install sip-tester" >&2; exit 1; }
command -v kamailio >/dev/null || { echo "kamailio missing: apt-get install kamailio" >&2; exit 1; }
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$PGBIN/postgres" ] || { echo "PostgreSQL missing: apt-get install postgresql" >&2; exit 1; }
MODULES=/usr/lib/x86_64-linux-gnu/kamailio/modules
RATES=${RATES:-"100 200 300 400 600 800 1000"}
SECONDS_PER_RATE=${SECONDS_PER_RATE:-10}
CALLS_DB=${CALLS_DB:-2000}
WORK=$(mktemp -d)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

as_pg() { if [ "$(id -u)" -eq 0 ]; then setpriv --reuid=postgres --regid=postgres --clear-groups -- "$@"; else "$@"; fi; }

# --- PostgreSQL -----------------------------------------------------------------------------
PGPORT=${PGPORT:-5492}
mkdir -p "$WORK/pg"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$WORK/pg"
as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U voxline --auth=trust -E UTF8 --no-sync >/dev/null
as_pg "$PGBIN/postgres" -D "$WORK/pg/data" -p "$PGPORT" -k "$WORK/pg" -c listen_addresses=127.0.0.1 \
  -c max_connections=300 -c shared_preload_libraries=pg_stat_statements \
  -c pg_stat_statements.track=all >"$WORK/pg.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  psql -h 127.0.0.1 -p "$PGPORT" -U voxline -d postgres -Atc "SELECT 1" >/dev/null 2>&1 && break
  sleep 0.1
done
psql_() { psql -h 127.0.0.1 -p "$PGPORT" -U voxline -v ON_ERROR_STOP=1 -Atq "$@"; }
psql_ -d postgres -c "SELECT 1" >/dev/null || { echo "PostgreSQL did not start:" >&2; cat "$WORK/pg.log" >&2; exit 1; }
DBN=0
DB=
new_db() { DBN=$((DBN + 1)); DB=bench_$DBN; psql_ -d postgres -c "CREATE DATABASE $DB"; }

# --- voxline nodes --------------------------------------------------------------------------
# node NAME SIP_PORT HTTP_PORT RTP_MIN STORE(sqlite|DB) -> starts it, PID in NODE_PID
node() {
  local name=$1 sip=$2 http=$3 rtp=$4 store=$5
  local dir="$WORK/$name"
  mkdir -p "$dir"
  {
    echo "data_dir = \"$dir/data\""
    if [ "$store" != sqlite ]; then
      printf '[store]\nurl = "postgres://voxline@127.0.0.1:%s/%s"\n' "$PGPORT" "$store"
      printf '[cluster]\nnode_id = "%s"\n' "$name"
    fi
    printf '[limits]\nmax_calls = 100000\nmax_transactions = 1000000\n'
    printf '[media]\nrtp_port_min = %s\nrtp_port_max = %s\n' "$rtp" $((rtp + 9998))
    printf '[[route]]\nnumber = "*"\nagent = "bench"\n[[agent]]\nname = "bench"\nkind = "hold"\nrecord = false\n'
  } >"$dir/voxline.toml"
  VOXLINE_LOG=warn "$BIN" run --config "$dir/voxline.toml" --sip-listen "127.0.0.1:$sip" \
    --http-listen "127.0.0.1:$http" >"$dir/log" 2>&1 &
  NODE_PID=$!
  PIDS+=("$NODE_PID")
  for _ in $(seq 100); do curl -sf "127.0.0.1:$http/health" >/dev/null && return; sleep 0.1; done
  echo "voxline $name did not start:" >&2; cat "$dir/log" >&2; exit 1
}
stop() { for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done; for p in "$@"; do wait "$p" 2>/dev/null || true; done; }

KPORT=5480
kamailio_start() { # NODE_SIP_PORTS...
  local list="$WORK/dispatcher.list"
  : >"$list"
  for p in "$@"; do echo "1 sip:127.0.0.1:$p" >>"$list"; done
  mkdir -p "$WORK/kam"
  kamailio -f deploy/kamailio/kamailio.cfg -L "$MODULES" -A "LISTEN=udp:127.0.0.1:$KPORT" \
    -A "DISPATCHER_LIST=\"$list\"" -A PIKE_DENSITY=1000000 -A CHILDREN=1 -m 256 -M 16 \
    -DD -E -Y "$WORK/kam" >/dev/null 2>"$WORK/kamailio.log" &
  KAM_PID=$!
  PIDS+=("$KAM_PID")
  sleep 2 # dispatcher's first OPTIONS round marks the nodes up
}

# sipp_run TARGET SCENARIO_ARGS RATE CALLS -> "ok failed"
sipp_run() {
  local target=$1 rate=$2 n=$3; shift 3
  local out="$WORK/sipp.out"
  ( cd "$WORK" && timeout $((n / rate * 3 + 40)) sipp "$@" "$target" -i 127.0.0.1 -p 5470 \
      -r "$rate" -m "$n" -l $((rate * 4)) -d 0 -nostdin -timeout $((n / rate * 3 + 30))s -timeout_error \
      -max_socket 1000 >"$out" 2>&1 ) || true
  local ok failed
  [ -n "${KEEP_SIPP:-}" ] && cp "$out" "$KEEP_SIPP.$rate.$(date +%s%N).out"
  failed=$(grep -E "^ +Failed call" "$out" | awk -F'|' '{print $3}' | tr -d ' ' || true)
  ok=$(grep -E "^ +Successful call" "$out" | awk -F'|' '{print $3}' | tr -d ' ' || true)
  echo "${ok:-?} ${failed:-?}"
}

setup() { # direct|pg|cluster -> TARGET, SETUP_PIDS, SCEN
  SETUP_PIDS=()
  case $1 in
    direct)
      node d 5410 8410 20000 sqlite; SETUP_PIDS+=("$NODE_PID")
      TARGET=127.0.0.1:5410; SCEN=(-sn uac) ;;
    pg)
      new_db
      node p 5420 8420 20000 "$DB"; SETUP_PIDS+=("$NODE_PID")
      TARGET=127.0.0.1:5420; SCEN=(-sn uac) ;;
    cluster)
      new_db
      node a 5430 8430 20000 "$DB"; SETUP_PIDS+=("$NODE_PID")
      node b 5440 8440 30000 "$DB"; SETUP_PIDS+=("$NODE_PID")
      node c 5450 8450 40000 "$DB"; SETUP_PIDS+=("$NODE_PID")
      kamailio_start 5430 5440 5450; SETUP_PIDS+=("$KAM_PID")
      TARGET=127.0.0.1:$KPORT; SCEN=(-sf sipp-scenarios/uac_via_proxy.xml -s 1000) ;;
  esac
}

echo "== call rate, ${SECONDS_PER_RATE}s per rate; the set-ups take turns at each rate"
declare -A best=([direct]=0 [pg]=0 [cluster]=0)
declare -A done_=([direct]=0 [pg]=0 [cluster]=0)
for r in $RATES; do
  for s in direct pg cluster; do
    [ "${done_[$s]}" = 1 ] && continue
    setup "$s"
    n=$((r * SECONDS_PER_RATE))
    read -r ok failed < <(sipp_run "$TARGET" "$r" "$n" "${SCEN[@]/#sipp-scenarios/$PWD/sipp-scenarios}")
    stop "${SETUP_PIDS[@]}"
    echo "$s rate=$r/s calls=$n successful=$ok failed=$failed"
    if [ "$failed" = 0 ] && [ "$ok" = "$n" ]; then best[$s]=$r; else done_[$s]=1; fi
  done
done
for s in direct pg cluster; do echo "highest rate with 0 failed calls: $s ${best[$s]} calls/s"; done

echo "== database statements per call ($CALLS_DB calls through the cluster at 100/s)"
setup cluster
psql_ -d "$DB" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
conns=$(psql_ -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE datname = '$DB'")
# Idle baseline: what three idle nodes run in 10 s.
psql_ -d "$DB" -c "SELECT pg_stat_statements_reset()" >/dev/null
sleep 10
idle=$(psql_ -d "$DB" -c "SELECT COALESCE(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '$DB'")
psql_ -d "$DB" -c "SELECT pg_stat_statements_reset()" >/dev/null
t0=$(date +%s.%N)
read -r ok failed < <(sipp_run "$TARGET" 100 "$CALLS_DB" "${SCEN[@]/#sipp-scenarios/$PWD/sipp-scenarios}")
t1=$(date +%s.%N)
sleep 2 # the record writers' last batches
t2=$(date +%s.%N)
busy=$(psql_ -d "$DB" -c "SELECT COALESCE(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '$DB'")
xacts=$(psql_ -d postgres -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$DB'")
echo "calls: successful=$ok failed=$failed"
echo "connections of 3 nodes: $conns"
awk -v idle="$idle" -v busy="$busy" -v t0="$t0" -v t2="$t2" -v n="$ok" 'BEGIN {
  secs = t2 - t0; idle_rate = idle / 10.0; call_part = busy - idle_rate * secs;
  printf "idle: %.1f statements/s for 3 nodes (%.1f per node)\n", idle_rate, idle_rate / 3;
  printf "statements during the calls: %d, of which idle work ~%.0f: %.2f statements per call\n", busy, idle_rate * secs, call_part / n }'
echo "commits since the database was made (all of its life): $xacts"
echo "top statements by calls:"
psql_ -d "$DB" -F ' | ' -c "SELECT calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 110) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '$DB' ORDER BY calls DESC LIMIT 12"
stop "${SETUP_PIDS[@]}"
