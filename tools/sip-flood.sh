#!/usr/bin/env bash
# Memory under and after a SIP flood, for docs/PERFORMANCE.md: voxline (hold agent, no calls)
# takes RATE datagrams/s of out-of-dialog OPTIONS (80 %) and garbage (20 %) for FLOOD_S
# seconds; its RSS and live transactions are sampled before, during and every 5 s after, up
# to AFTER_S seconds after the flood ends.
#
#   cargo build --release && bash tools/sip-flood.sh
#   RATE=150000 FLOOD_S=15 AFTER_S=90 METHOD=OPTIONS MAX_TX=32768 bash tools/sip-flood.sh
#
# 127.0.0.1 only; the processes started here are stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/voxline
FLOOD=target/release/voxline-sip-flood
[ -x "$BIN" ] && [ -x "$FLOOD" ] || { echo "build first: cargo build --release" >&2; exit 1; }
WORK=$(mktemp -d)
PORT=${PORT:-5392}
HTTP=${HTTP:-8392}
RATE=${RATE:-150000}
FLOOD_S=${FLOOD_S:-15}
AFTER_S=${AFTER_S:-90}
METHOD=${METHOD:-OPTIONS}
# limits.max_transactions (default: voxline's own default).
MAX_TX=${MAX_TX:-}
cat > "$WORK/voxline.toml" <<TOML
data_dir = "$WORK/data"
${MAX_TX:+[limits]
max_transactions = $MAX_TX}
[[route]]
number = "*"
agent = "hold"
TOML
VOXLINE_LOG=${VOXLINE_LOG:-warn} "$BIN" run --config "$WORK/voxline.toml" --sip-listen 127.0.0.1:$PORT --http-listen 127.0.0.1:$HTTP >"$WORK/voxline.log" 2>&1 &
VOX=$!
FL=
cleanup() {
  [ -n "$FL" ] && kill "$FL" 2>/dev/null || true
  kill -TERM "$VOX" 2>/dev/null && wait "$VOX" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 50); do curl -sf "127.0.0.1:$HTTP/health" >/dev/null && break; sleep 0.1; done
rss() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$VOX/status"; }
tx() { curl -sf "127.0.0.1:$HTTP/metrics" | awk '/^voxline_sip_server_transactions / {print $2}'; }
metric() { curl -sf "127.0.0.1:$HTTP/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
sample() {
  printf '%-14s RSS %7s MiB  server transactions %6s  refused (overload) %8s  dropped (queue full) %8s  parsed %8s\n' \
    "$1" "$(rss)" "$(tx)" "$(metric voxline_sip_dropped_overload_total)" \
    "$(metric voxline_sip_inbound_dropped_total)" "$(metric voxline_sip_messages_in_total)"
}
sample "before"
"$FLOOD" --target 127.0.0.1:$PORT --rate "$RATE" --seconds "$FLOOD_S" --method "$METHOD" --garbage-percent "${GARBAGE:-20}" &
FL=$!
for s in $(seq 5 5 "$FLOOD_S"); do sleep 5; sample "flood ${s} s"; done
wait "$FL"; FL=
sample "flood end"
for s in $(seq 5 5 "$AFTER_S"); do sleep 5; sample "after ${s} s"; done
grep -c . "$WORK/voxline.log" | xargs echo "log lines:"
grep -m5 -i "overload\|warn" "$WORK/voxline.log" || true
