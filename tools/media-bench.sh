#!/usr/bin/env bash
# Media load run for docs/PERFORMANCE.md ("Media per call"): N concurrent G.711 calls answered
# by voxline's echo agent, which puts every packet through the jitter buffer, decodes it and
# sends it back encoded. Reports the CPU time of the process under test per call (share of one
# core) and its memory per call.
#
#   cargo build --release && bash tools/media-bench.sh       # CALLS=300 RATE=100 SAMPLE=10
#   RUNS=11 SAMPLE=20 bash tools/media-bench.sh   # 11 runs: median and range of the CPU per call
#   CALLS=1000 bash tools/media-bench.sh
#   TARGET=reflector bash tools/media-bench.sh   # the floor: voxline-udp-reflector, same load
#   TARGET=reflector REFL_ARGS="--timestamps yes" ...   # its options (tools/udp_reflector.rs)
#   LOADGEN=sipp bash tools/media-bench.sh       # the old method: SIPp uac_pcap (raw sockets)
#   RAWSOCKS=300 bash tools/media-bench.sh       # add 300 idle raw UDP sockets (the SIPp artifact)
#   PERF=1 ...                                   # also records a 3 s profile to /tmp/perf.data
#   VOXLINE_BIN=/path/to/voxline ...             # another build (A/B: see tools/media-ab.sh)
#   WARM=6 (default)                             # seconds after the calls are up before sampling
#   SRTP=yes ...                                 # SDES-SRTP calls (RTP/SAVP; voxline srtp = "optional")
#
# LOADGEN=rtpload (default) is tools/rtp_load.rs: minimal SIP over UDP, 20 ms RTP over
# ordinary UDP sockets. LOADGEN=sipp plays /usr/share/sip-tester/g711a.pcap with SIPp's
# play_pcap_audio, which sends through a raw socket per playing call: every UDP packet
# delivered on the host is then offered to each of them, a cost that grows with the number of
# calls and is charged to the sender (see docs/PERFORMANCE.md).
#
# 127.0.0.1 only; bounded call count and time; the processes started here are stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
# RUNS=N: N runs one after the other, then the median and range of the CPU per call (the
# machine is a VM whose runs vary by about ±15 %; docs/PERFORMANCE.md reports medians).
RUNS=${RUNS:-1}
if [ "$RUNS" -gt 1 ]; then
  [ "$RUNS" -le 30 ] || { echo "RUNS is at most 30" >&2; exit 1; }
  figures=()
  for i in $(seq "$RUNS"); do
    out=$(RUNS=1 bash "$0")
    line=$(grep -E 'CPU: .* per call' <<<"$out" | head -1)
    echo "run $i: ${line}"
    figures+=("$(sed -E 's/.*-> ([0-9.]+)% of one core per call/\1/' <<<"$line")")
  done
  python3 - "${figures[@]}" <<'PY'
import statistics, sys
v = sorted(float(x) for x in sys.argv[1:])
print(f"CPU per call over {len(v)} runs: median {statistics.median(v):.4f}%, range {v[0]:.4f}-{v[-1]:.4f}% of one core")
PY
  exit 0
fi
REL=${CARGO_TARGET_DIR:-$PWD/target}/release
BIN=${VOXLINE_BIN:-$REL/voxline}
LOAD=$REL/voxline-rtp-load
REFL=$REL/voxline-udp-reflector
LOADGEN=${LOADGEN:-rtpload}
TARGET=${TARGET:-voxline}
CALLS=${CALLS:-300}
RATE=${RATE:-100}
SAMPLE=${SAMPLE:-10}
CODEC=${CODEC:-pcma}
# RFC 4733 offered (as SIPp's uac_pcap does); TE=no makes voxline run its in-band DTMF detector.
TE=${TE:-yes}
SRTP=${SRTP:-no}
case "$SRTP" in yes) MEDIA_SRTP=optional ;; no) MEDIA_SRTP=off ;; *) echo "SRTP=yes|no" >&2; exit 1 ;; esac
PORT=${PORT:-5590}
HTTP=${HTTP:-8590}
# The load generator's and the reflector's ports: above the ephemeral range and away from
# voxline's default RTP range (10000-20000), which other voxline instances may be using.
RTP_BASE=${RTP_BASE:-61000}
REFL_BASE=${REFL_BASE:-63100}
RAWSOCKS=${RAWSOCKS:-0}
# Seconds between the last call coming up and the sample: past the 5 s latching window of
# every call, after which voxline connects each RTP socket to its peer (steady state).
WARM=${WARM:-6}
for b in "$BIN" "$LOAD" "$REFL"; do
  [ -x "$b" ] || { echo "build first: cargo build --release ($b missing)" >&2; exit 1; }
done
[ "$LOADGEN" = sipp ] && { command -v sipp >/dev/null || { echo "sipp missing: apt-get install sip-tester" >&2; exit 1; }; }
[ "$LOADGEN" = sipp ] && [ "$TARGET" != voxline ] && { echo "LOADGEN=sipp needs TARGET=voxline" >&2; exit 1; }
# Two sockets per call on each side.
ulimit -n 65536 2>/dev/null || true
WORK=$(mktemp -d)
ln -s /usr/share/sip-tester "$WORK/pcap"
cat > "$WORK/voxline.toml" <<TOML
data_dir = "$WORK/data"
[limits]
max_calls = 100000
[media]
rtp_port_min = 20000
rtp_port_max = 60000
srtp = "$MEDIA_SRTP"
[[route]]
number = "*"
agent = "bench"
[[agent]]
name = "bench"
kind = "echo"
record = false
TOML
PID=
GEN=
RAW=
cleanup() {
  [ -n "$GEN" ] && kill -INT "$GEN" 2>/dev/null || true
  [ -n "$RAW" ] && kill -TERM "$RAW" 2>/dev/null || true
  [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
if [ "$RAWSOCKS" -gt 0 ]; then
  # Idle raw UDP sockets, as SIPp's pcap playback holds one per playing call; bounded life.
  python3 -c "
import socket, sys, time
s = [socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP) for _ in range(min(int(sys.argv[1]), 2000))]
time.sleep(600)" "$RAWSOCKS" &
  RAW=$!
fi
SETTLE=$(( CALLS / RATE + 3 ))
if [ "$TARGET" = voxline ]; then
  VOXLINE_LOG=warn "$BIN" run --config "$WORK/voxline.toml" --sip-listen 127.0.0.1:$PORT --http-listen 127.0.0.1:$HTTP >"$WORK/target.log" 2>&1 &
  PID=$!
  for _ in $(seq 50); do curl -sf "127.0.0.1:$HTTP/health" >/dev/null && break; sleep 0.1; done
else
  # shellcheck disable=SC2086
  "$REFL" --base "$REFL_BASE" --calls "$CALLS" --seconds $(( SETTLE * 2 + SAMPLE + 30 )) ${REFL_ARGS:-} >"$WORK/target.log" 2>&1 &
  PID=$!
  sleep 0.3
fi
TCK=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# All CPUs' idle time in ticks (exact with a tickless kernel, unlike the busy columns), to
# tell how much else ran during the sample.
idle() { awk '/^cpu / {print $5 + $6}' /proc/stat; }
NCPU=$(nproc)
rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
active() {
  if [ "$TARGET" = voxline ]; then curl -s "127.0.0.1:$HTTP/health" | sed -E 's/.*"active_calls":([0-9]+).*/\1/'; else echo "$CALLS"; fi
}
base_rss=$(rss)
if [ "$LOADGEN" = sipp ]; then
  ( cd "$WORK" && timeout 300 sipp -sn uac_pcap 127.0.0.1:$PORT -i 127.0.0.1 -p $((PORT + 1)) -mp 40000 \
      -r "$RATE" -m "$CALLS" -l "$CALLS" -nostdin -timeout 240s -timeout_error -max_socket 2000 >"$WORK/gen.out" 2>&1 ) &
  GEN=$!
  # Let the call count build up (each call plays ~9 s of audio), then sample for 4 s.
  sleep $(( (CALLS / RATE) < 9 ? (CALLS / RATE) + 1 : 9 ))
  SAMPLE=4
else
  EXTRA=0; [ -n "${PERF:-}" ] && EXTRA=$(( ${PERF_S:-3} + 1 ))
  if [ "$TARGET" = voxline ]; then dest=(--target 127.0.0.1:$PORT); else dest=(--rtp-only 127.0.0.1:$REFL_BASE); fi
  "$LOAD" "${dest[@]}" --calls "$CALLS" --rate "$RATE" --codec "$CODEC" --telephone-event "$TE" --srtp "$SRTP" --rtp-base "$RTP_BASE" \
      --seconds $(( SAMPLE + WARM + 1 + EXTRA )) >"$WORK/gen.out" 2>&1 &
  GEN=$!
  for _ in $(seq $(( SETTLE * 20 + 200 ))); do grep -q '^UP' "$WORK/gen.out" && break; sleep 0.05; done
  grep -q '^UP' "$WORK/gen.out" || { echo "calls did not come up"; cat "$WORK/gen.out"; exit 1; }
  sleep "$WARM"
fi
a1=$(active); c1=$(cpu "$PID"); g1=$(cpu "$GEN" 2>/dev/null || echo 0); b1=$(idle); t1=$(date +%s.%N)
sleep "$SAMPLE"
a2=$(active); c2=$(cpu "$PID"); g2=$(cpu "$GEN" 2>/dev/null || echo 0); b2=$(idle); t2=$(date +%s.%N); peak_rss=$(rss)
if [ -n "${PERF:-}" ]; then perf record -F ${PERF_HZ:-1999} ${PERF_ARGS:--g} -p "$PID" -o /tmp/perf.data -- sleep ${PERF_S:-3} >/dev/null 2>&1; fi
wait "$GEN" || true
GEN=
if [ "$LOADGEN" = sipp ]; then
  ok=$(grep -E "^ +Successful call" "$WORK/gen.out" | awk -F'|' '{print $3}' | tr -d ' ')
  failed=$(grep -E "^ +Failed call" "$WORK/gen.out" | awk -F'|' '{print $3}' | tr -d ' ')
  echo "sipp: successful=$ok failed=$failed"
  g1=0; g2=0
else
  grep -v '^UP' "$WORK/gen.out"
fi
python3 - "$NCPU" "$a1" "$a2" "$c1" "$c2" "$g1" "$g2" "$b1" "$b2" "$t1" "$t2" "$TCK" "$base_rss" "$peak_rss" "$TARGET" "$LOADGEN" <<'PY'
import sys
ncpu, a1, a2, c1, c2, g1, g2, b1, b2, t1, t2, tck, base, peak, target, loadgen = sys.argv[1:]
calls = (int(a1) + int(a2)) / 2
wall = float(t2) - float(t1)
share = (int(c2) - int(c1)) / int(tck) / wall  # cores busy
gen = (int(g2) - int(g1)) / int(tck) / wall
machine = int(ncpu) - (int(b2) - int(b1)) / int(tck) / wall
print(f"load: {loadgen}, target: {target}, concurrent calls (avg over sample): {calls:.0f}, sample {wall:.1f} s")
print(f"{target} CPU: {share*100:.1f}% of one core -> {share*100/calls:.4f}% of one core per call")
if loadgen != "sipp":
    print(f"load generator CPU: {gen*100:.1f}% of one core")
    print(f"machine: {machine*100:.1f}% of one core busy in all, {max(0.0, machine - share - gen)*100:.1f}% outside target and load generator")
else:
    print(f"machine: {machine*100:.1f}% of one core busy in all (SIPp included)")
print(f"{target} RSS: {int(base)} KiB idle -> {int(peak)} KiB -> {(int(peak)-int(base))/calls:.1f} KiB per call")
PY
