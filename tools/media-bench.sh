#!/usr/bin/env bash
# Media load run for docs/PERFORMANCE.md: N concurrent SIPp `uac_pcap` calls (G.711 A-law
# audio from /usr/share/sip-tester/g711a.pcap) answered by voxline's echo agent, which decodes
# every packet through the jitter buffer and sends it back encoded. Reports voxline's CPU per
# call (share of one core) and memory per call.
#
#   cargo build --release && bash tools/media-bench.sh            # CALLS=400 RATE=50
#   PERF=1 bash tools/media-bench.sh    # also records a 3 s CPU profile to /tmp/perf.data
#
# 127.0.0.1 only; bounded call count; the processes started here are stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/target/release/voxline
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v sipp >/dev/null || { echo "sipp missing: apt-get install sip-tester" >&2; exit 1; }
CALLS=${CALLS:-400}
RATE=${RATE:-50}
PORT=${PORT:-5590}
HTTP=${HTTP:-8590}
WORK=$(mktemp -d)
ln -s /usr/share/sip-tester "$WORK/pcap"
cat > "$WORK/voxline.toml" <<TOML
data_dir = "$WORK/data"
[limits]
max_calls = 100000
[media]
rtp_port_min = 20000
rtp_port_max = 60000
[[route]]
number = "*"
agent = "bench"
[[agent]]
name = "bench"
kind = "echo"
record = false
TOML
VOXLINE_LOG=warn "$BIN" run --config "$WORK/voxline.toml" --sip-listen 127.0.0.1:$PORT --http-listen 127.0.0.1:$HTTP >"$WORK/voxline.log" 2>&1 &
VOX=$!
SIPP=
cleanup() { [ -n "$SIPP" ] && kill -INT "$SIPP" 2>/dev/null || true; kill -TERM "$VOX" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
for _ in $(seq 50); do curl -sf "127.0.0.1:$HTTP/health" >/dev/null && break; sleep 0.1; done
TCK=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$VOX/stat"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$VOX/status"; }
active() { curl -s "127.0.0.1:$HTTP/health" | sed -E 's/.*"active_calls":([0-9]+).*/\1/'; }
base_rss=$(rss)
( cd "$WORK" && timeout 300 sipp -sn uac_pcap 127.0.0.1:$PORT -i 127.0.0.1 -p $((PORT + 1)) -mp 40000 \
    -r "$RATE" -m "$CALLS" -l "$CALLS" -nostdin -timeout 240s -timeout_error -max_socket 2000 >"$WORK/sipp.out" 2>&1 ) &
SIPP=$!
# Let the call count build up (each call plays ~9 s of audio), then sample for 4 s.
sleep $(( (CALLS / RATE) < 9 ? (CALLS / RATE) + 1 : 9 ))
a1=$(active); c1=$(cpu); t1=$(date +%s.%N)
sleep 4; if [ -n "${PERF:-}" ]; then perf record -F 1999 -g -p $VOX -o /tmp/perf.data -- sleep 3 >/dev/null 2>&1; fi
a2=$(active); c2=$(cpu); t2=$(date +%s.%N); peak_rss=$(rss)
wait "$SIPP" || true
SIPP=
ok=$(grep -E "^ +Successful call" "$WORK/sipp.out" | awk -F'|' '{print $3}' | tr -d ' ')
failed=$(grep -E "^ +Failed call" "$WORK/sipp.out" | awk -F'|' '{print $3}' | tr -d ' ')
python3 - "$a1" "$a2" "$c1" "$c2" "$t1" "$t2" "$TCK" "$base_rss" "$peak_rss" "$ok" "$failed" <<'PY'
import sys
a1, a2, c1, c2, t1, t2, tck, base, peak, ok, failed = sys.argv[1:]
calls = (int(a1) + int(a2)) / 2
cpu_s = (int(c2) - int(c1)) / int(tck)
wall = float(t2) - float(t1)
share = cpu_s / wall  # cores busy
print(f"sipp: successful={ok} failed={failed}")
print(f"concurrent calls (avg over sample): {calls:.0f}")
print(f"voxline CPU: {share*100:.1f}% of one core -> {share*100/calls:.4f}% of one core per call")
print(f"voxline RSS: {int(base)} KiB idle -> {int(peak)} KiB -> {(int(peak)-int(base))/calls:.1f} KiB per call")
PY
