#!/usr/bin/env bash
# A/B comparison of two voxline builds under the same machine conditions: both run the media
# load of tools/media-bench.sh at the same time (CALLS calls each, their own ports), so noise
# from the rest of the machine (this is a VM) hits both alike. Prints each pair and the median
# of the per-call difference B - A.
#
#   bash tools/media-ab.sh /tmp/voxline-a /tmp/voxline-b [PAIRS]     # CALLS=200 SAMPLE=10
#   SRTP_B=yes bash tools/media-ab.sh target/release/voxline target/release/voxline
#       # one build, B's calls SDES-SRTP (tools/media-bench.sh SRTP=yes): what SRTP costs
#
# The two sides swap places (ports) every other pair. 127.0.0.1 only; bounded like
# tools/media-bench.sh, whose processes stop by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1; B=$2; PAIRS=${3:-6}
[ "$PAIRS" -le 30 ] || { echo "at most 30 pairs" >&2; exit 1; }
CALLS=${CALLS:-200}
SAMPLE=${SAMPLE:-10}
diffs=()
one() { # bin port http rtp_base out srtp
  VOXLINE_BIN=$1 PORT=$2 HTTP=$3 RTP_BASE=$4 CALLS=$CALLS SAMPLE=$SAMPLE SRTP=$6 bash tools/media-bench.sh >"$5" 2>&1
}
fig() { sed -nE 's/.*-> ([0-9.]+)% of one core per call/\1/p' "$1" | head -1; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
for i in $(seq "$PAIRS"); do
  if [ $((i % 2)) -eq 1 ]; then pa=(5590 8590 61000); pb=(5690 8690 62000); else pa=(5690 8690 62000); pb=(5590 8590 61000); fi
  one "$A" "${pa[@]}" "$T/a" "${SRTP_A:-no}" & ja=$!
  one "$B" "${pb[@]}" "$T/b" "${SRTP_B:-no}" & jb=$!
  wait "$ja" "$jb" || true
  a=$(fig "$T/a"); b=$(fig "$T/b")
  if [ -z "$a" ] || [ -z "$b" ]; then echo "pair $i: a run failed"; cat "$T/a" "$T/b"; continue; fi
  echo "pair $i: A $a%  B $b%"
  diffs+=("$a" "$b")
done
python3 - "${diffs[@]}" <<'PY'
import statistics, sys
v = [float(x) for x in sys.argv[1:]]
a, b = v[0::2], v[1::2]
if not a:
    sys.exit("no pair completed")
d = sorted(y - x for x, y in zip(a, b))
print(f"A median {statistics.median(a):.4f}%, B median {statistics.median(b):.4f}% of one core per call")
print(f"B - A per pair: median {statistics.median(d):+.4f}%, range {d[0]:+.4f} to {d[-1]:+.4f} ({len(d)} pairs)")
PY
