#!/usr/bin/env bash
# Calibration check of the cost model (issue 4): on a bed of 2 nodes (CALIB_NODES) x 2 rails with every NIC
# capped by tc (CALIB_RATE, default 500mbit), 2 ranks per node time allreduce, allgather and
# broadcast from 1 MiB to 64 MiB (tests/multinode/mn_perf), once with NCCL_ALGO=Ring and once with
# Tree; anyccl-sim predicts each with the same schedules and cost model, told the cap
# (--nic-gbit). Prints the table and, per collective and algorithm:
#   PASS multinode-calib/<op>/<algo>   every size within 25% of the measurement
# Not root or no namespaces: SKIP. A miss is SKIP with the figures, never FAIL: the test suite
# asserts no timing (a busy host or a sanitized build says so in the message). Bounded: each run has a 40 s limit (~20 s in all).
#   BUILD=build  CALIB_RATE=500mbit  CALIB_TOL=25  CALIB_NODES=2  tests/multinode/calib.sh
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 2
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
BED=$PWD/tests/multinode/bed.sh
PERF=$BUILD/tests/multinode/mn_perf
SIM=$BUILD/bin/anyccl-sim
TOPO=$PWD/tests/multinode/bed-node.xml
RATE=${CALIB_RATE:-500mbit}
TOL=${CALIB_TOL:-25}
K=${CALIB_NODES:-2}
LIMIT=40
export BED_ID=acbed-$$
export BED_NET=${BED_NET:-214}
# bed.sh's tbf burst (256kb) stays: a smaller one (32 or 64kb) halves TCP's throughput under the
# cap on a busy host. A link that was idle passes its first 256 KB at once: anyccl-sim is told
# (--burst), which shortens the trees' turn-around.
TMP=""
failed=0

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    "$BED" down 2>/dev/null
    [[ -n $TMP ]] && rm -rf "$TMP"
}

if [[ $(id -u) != 0 ]]; then
    echo "SKIP multinode-calib: not root (network namespaces need CAP_SYS_ADMIN)"
    exit 0
fi
if ! ip netns add "$BED_ID-probe" 2>/dev/null; then
    echo "SKIP multinode-calib: ip netns add fails here (no network namespaces?)"
    exit 0
fi
ip netns del "$BED_ID-probe"
for f in "$PERF" "$SIM"; do
    [[ -x $f ]] || { echo "FAIL multinode-calib: $f is not built (make test-build)"; exit 1; }
done
# the rate in Gb/s for anyccl-sim: 500mbit -> 0.5
gbit=$(awk -v r="$RATE" 'BEGIN { v = r + 0; u = tolower(r); sub(/^[0-9.]+/, "", u)
    if (u == "gbit") v *= 1; else if (u == "mbit") v /= 1000; else if (u == "kbit") v /= 1e6
    else { print "bad"; exit } print v }')
[[ $gbit == bad ]] && { echo "FAIL multinode-calib: CALIB_RATE=$RATE (want e.g. 500mbit)"; exit 1; }

# Timings on a host that others keep busy are not the model's business: with a 1-minute load
# above the core count before the run, a miss is reported as SKIP (the table still prints).
ncores=$(nproc)
load=$(cut -d' ' -f1 /proc/loadavg)
busy=$(awk -v l="$load" -v n="$ncores" 'BEGIN { print (l > n) ? 1 : 0 }')
why_busy="the host was busy before the run (load $load on $ncores cores)"
# A sanitized build (make asan) times the sanitizer as much as the network: figures only.
if ldd "$PERF" 2>/dev/null | grep -qE 'lib(a|ub)san'; then
    busy=1
    why_busy="a sanitized build (its timings include the sanitizer)"
fi

trap cleanup EXIT
trap 'exit 130' INT TERM
TMP=$(mktemp -d "${TMPDIR:-/tmp}/calib.XXXXXX")
if ! "$BED" up "$K" 2 --rate "$RATE" --route0 2>"$TMP/bed.err"; then
    echo "FAIL multinode-calib: bed.sh up $K 2 --rate $RATE failed: $(head -c 300 "$TMP/bed.err")"
    exit 1
fi

# measure ALGO OPS: 4 ranks, rank 0's TIME lines into $TMP/ALGO.out
measure() {
    local algo=$1 ops=$2 k i rank pids=() rc=0
    for ((k = 0; k < K; k++)); do
        for ((i = 0; i < 2; i++)); do
            rank=$((2 * k + i))
            timeout -k 5 $LIMIT "$BED" exec "$k" env NCCL_SOCKET_IFNAME=rail NCCL_ALGO="$algo" \
                "$PERF" "$rank" $((2 * K)) "$TMP/$algo.id" $((1 << 20)) $((64 << 20)) "$ops" \
                >"$TMP/$algo.$rank.out" 2>"$TMP/$algo.$rank.err" &
            pids+=($!)
        done
    done
    for k in "${pids[@]}"; do
        wait "$k" || rc=$?
    done
    if ((rc != 0)); then
        echo "FAIL multinode-calib/$algo: a rank exited with status $rc:" \
            "$(cat "$TMP/$algo".*.err | head -c 400)"
        failed=1
    fi
}

predict() { # op algo bytes -> microseconds
    "$SIM" --topo "$TOPO" --nodes "$K" --ppn 2 --rails 2 --nic-gbit "$gbit" --burst 256K --op "$1" \
        --bytes "$3" | awk -v a="$2" '$1 !~ /^#/ && (tolower($3) == tolower(a) ||
            $3 == "Pairwise") { print $4; exit }'
}

t0=$SECONDS
measure Ring allreduce,allgather,broadcast
measure Tree allreduce,broadcast
echo "INFO multinode-calib: $K nodes x 2 rails x 2 ranks, NICs capped at $RATE ($gbit Gb/s)," \
    "measured in $((SECONDS - t0)) s; host load $load on $ncores cores before the run"
printf 'INFO multinode-calib: %-10s %-5s %10s %14s %14s %8s\n' op algo bytes measured_us \
    predicted_us error
declare -A worst=()
for algo in Ring Tree; do
    [[ -s $TMP/$algo.0.out ]] || continue
    while read -r _ op bytes us; do
        pred=$(predict "$op" "$algo" "$bytes")
        err=$(awk -v m="$us" -v p="$pred" 'BEGIN { printf "%.1f", 100 * (p - m) / m }')
        printf 'INFO multinode-calib: %-10s %-5s %10d %14.0f %14.0f %7s%%\n' "$op" "$algo" \
            "$bytes" "$us" "$pred" "$err"
        key=$op/$algo
        worst[$key]=$(awk -v w="${worst[$key]:-0}" -v e="$err" \
            'BEGIN { e = e < 0 ? -e : e; print (e > w ? e : w) }')
    done < <(grep '^TIME ' "$TMP/$algo.0.out")
done
for key in "${!worst[@]}"; do
    if awk -v w="${worst[$key]}" -v t="$TOL" 'BEGIN { exit !(w <= t) }'; then
        echo "PASS multinode-calib/$key (worst error ${worst[$key]}%)"
    elif ((busy)); then
        echo "SKIP multinode-calib/$key: worst error ${worst[$key]}%, want <= $TOL%, but" \
            "$why_busy"
    else
        # A timing is a measurement, not a verdict: the suite asserts no time (the figures above
        # are what the note and docs/topology.md quote).
        echo "SKIP multinode-calib/$key: worst error ${worst[$key]}%, above the $TOL% aim" \
            "(reported, not asserted: timings on a shared machine)"
    fi
done
exit $failed
