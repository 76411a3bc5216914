#!/usr/bin/env bash
# SIP over TLS call rate for docs/PERFORMANCE.md: calls per second over one reused TLS
# connection against the same calls each on a new connection, side by side in one run, with
# voxline's CPU for each.
#
#   cargo build --release && bash tools/sip-tls-bench.sh
#   RATES="200 500 1000" SECONDS_PER_RATE=10 bash tools/sip-tls-bench.sh
#   REUSE=yes RATES="4000 5000" bash tools/sip-tls-bench.sh     # one connection only
#
# Everything runs on 127.0.0.1 with bounded call counts; the processes started here are
# stopped by PID at the end. The certificate is a throwaway self-signed one (openssl).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VOXLINE_BIN:-target/release/voxline}
LOAD=target/release/voxline-sip-tls-load
[ -x "$BIN" ] && [ -x "$LOAD" ] || { echo "build first: cargo build --release" >&2; exit 1; }
WORK=$(mktemp -d)
PORT=${PORT:-5395}
TLS_PORT=${TLS_PORT:-5396}
HTTP=${HTTP:-8395}
RATES=${RATES:-"200 500 1000"}
SECONDS_PER_RATE=${SECONDS_PER_RATE:-10}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost" \
  -addext "basicConstraints=critical,CA:FALSE" \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
# The SIP bench's configuration (hold agent, no recording, records to SQLite) plus TLS.
cat > "$WORK/voxline.toml" <<TOML
data_dir = "$WORK/data"
[sip]
tls_listen = ["127.0.0.1:$TLS_PORT"]
tls_cert_file = "$WORK/cert.pem"
tls_key_file = "$WORK/key.pem"
# One source (this machine) opens every connection: lift the per-source cap (64) that
# defends against one host flooding, so the run without reuse measures handshakes instead.
tcp_max_per_source = 1000
[limits]
max_calls = 100000
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
  echo "voxline did not start" >&2; cat "$WORK/voxline.log" >&2; exit 1
}
stop_vox() { [ -n "$VOX" ] && kill -TERM "$VOX" 2>/dev/null && wait "$VOX" 2>/dev/null || true; VOX=; }
trap 'stop_vox; rm -rf "$WORK"' EXIT
# utime + stime of a process, in clock ticks.
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "== SIP over TLS: INVITE/100/180/200/ACK/BYE/200, no media, ${SECONDS_PER_RATE}s per rate"
for r in $RATES; do
  for reuse in ${REUSE:-yes no}; do
    start_vox
    t0=$(ticks "$VOX")
    out=$("$LOAD" --target 127.0.0.1:$TLS_PORT --ca "$WORK/cert.pem" --server-name localhost \
      --rate "$r" --seconds "$SECONDS_PER_RATE" --reuse "$reuse" 2>"$WORK/load.err" || true)
    t1=$(ticks "$VOX")
    calls=$((r * SECONDS_PER_RATE))
    echo "$out voxline_cpu_ticks=$((t1 - t0)) voxline_cpu_us_per_call=$(( (t1 - t0) * 1000000 / HZ / calls ))"
    [ -s "$WORK/load.err" ] && grep -v "^ *[0-9]*: \|^Stack backtrace\|^ *at \|^$" "$WORK/load.err" | head -4
    stop_vox
  done
done
