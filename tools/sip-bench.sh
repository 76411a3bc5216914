#!/usr/bin/env bash
# SIP benchmarks for docs/PERFORMANCE.md: highest call rate with 0 failed calls (SIPp uac →
# voxline, no media), INVITE→200 latency, and memory per established dialog.
#
#   cargo build --release && bash tools/sip-bench.sh
#   VOXLINE_BIN=/tmp/voxline-old bash tools/sip-bench.sh     # another build (side by side)
#
# Everything runs on 127.0.0.1 with bounded call counts; the processes started here are
# stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VOXLINE_BIN:-target/release/voxline}
LAT=target/release/voxline-sip-latency
[ -x "$BIN" ] && [ -x "$LAT" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v sipp >/dev/null || { echo "sipp missing: apt-get install sip-tester" >&2; exit 1; }
WORK=$(mktemp -d)
PORT=${PORT:-5390}
HTTP=${HTTP:-8390}
RATES=${RATES:-"500 1000 1500 2000 2500 3000"}
SECONDS_PER_RATE=${SECONDS_PER_RATE:-10}
# Signalling only, as far as voxline allows: the hold agent (silence), no recording; call
# records still go to SQLite (in the temporary data directory).
cat > "$WORK/voxline.toml" <<TOML
data_dir = "$WORK/data"
[limits]
max_calls = 100000
# An INVITE transaction lingers 32 s after the 200 (RFC 6026): 3,000 calls/s keep ~100,000.
max_transactions = 1000000
[media]
rtp_port_min = 20000
rtp_port_max = 60000
[[route]]
number = "*"
agent = "bench"
[[agent]]
name = "bench"
kind = "hold"
record = false
TOML
VOX=
start_vox() {
  VOXLINE_LOG=warn "$BIN" run --config "$WORK/voxline.toml" --sip-listen 127.0.0.1:$PORT --http-listen 127.0.0.1:$HTTP >"$WORK/voxline.log" 2>&1 &
  VOX=$!
  for _ in $(seq 50); do curl -sf "127.0.0.1:$HTTP/health" >/dev/null && return; sleep 0.1; done
  echo "voxline did not start" >&2; exit 1
}
stop_vox() { [ -n "$VOX" ] && kill -TERM "$VOX" 2>/dev/null && wait "$VOX" 2>/dev/null || true; VOX=; }
trap 'stop_vox; rm -rf "$WORK"' EXIT

echo "== call rate (SIPp uac, INVITE/100/180/200/ACK/BYE/200, no media), ${SECONDS_PER_RATE}s per rate"
best=0
for r in $RATES; do
  start_vox
  n=$((r * SECONDS_PER_RATE))
  ( cd "$WORK" && timeout $((SECONDS_PER_RATE * 3 + 30)) sipp -sn uac 127.0.0.1:$PORT -i 127.0.0.1 -p $((PORT + 1)) \
      -r "$r" -m "$n" -l $((r * 4)) -d 0 -nostdin -timeout $((SECONDS_PER_RATE * 3 + 20))s -timeout_error \
      -stf "stat_$r.csv" -max_socket 1000 >"sipp_$r.out" 2>&1 ) || true
  failed=$(grep -E "^ +Failed call" "$WORK/sipp_$r.out" | awk -F'|' '{print $3}' | tr -d ' ' || echo "?")
  ok=$(grep -E "^ +Successful call" "$WORK/sipp_$r.out" | awk -F'|' '{print $3}' | tr -d ' ' || echo "?")
  retrans=$(grep -E "Retransmissions" "$WORK/sipp_$r.out" | head -1 | awk -F'|' '{print $3}' | tr -d ' ' || echo "?")
  echo "rate=$r/s calls=$n successful=$ok failed=$failed sipp_retransmissions=$retrans"
  stop_vox
  if [ "$failed" = "0" ] && [ "$ok" = "$n" ]; then best=$r; fi
done
echo "highest rate with 0 failed calls: $best calls/s"

echo "== INVITE -> 200 latency (one call at a time, 200 calls/s)"
start_vox
"$LAT" --target 127.0.0.1:$PORT --calls 3000 --rate 200
stop_vox

echo "== memory per established dialog"
start_vox
base=$(ps -o rss= -p "$VOX" | tr -d ' ')
HOLD=${HOLD:-5000}
( cd "$WORK" && timeout 90 sipp -sn uac 127.0.0.1:$PORT -i 127.0.0.1 -p $((PORT + 1)) -r 1000 -m "$HOLD" -l "$HOLD" \
    -d 30000 -nostdin -timeout 80s -timeout_error >"sipp_mem.out" 2>&1 ) &
SIPP=$!
sleep $((HOLD / 1000 + 4))
active=$(curl -s "127.0.0.1:$HTTP/health" | sed -E 's/.*"active_calls":([0-9]+).*/\1/')
peak=$(ps -o rss= -p "$VOX" | tr -d ' ')
kill -INT "$SIPP" 2>/dev/null || true
wait "$SIPP" 2>/dev/null || true
stop_vox
echo "baseline_rss_kib=$base rss_with_calls_kib=$peak active_calls=$active"
if [ "${active:-0}" -gt 0 ]; then
  echo "memory per established dialog: $(( (peak - base) * 1024 / active )) bytes"
fi
