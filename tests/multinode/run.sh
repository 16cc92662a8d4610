#!/usr/bin/env bash
# The multi-node suite (issue 4): for each configuration, builds a bed of K nodes x R rails
# (tests/multinode/bed.sh), starts L ranks per node inside the node's namespace, runs every
# collective (mn_colls) and reports:
#   PASS|FAIL multinode/<cfg>/<collective>   from rank 0 (mismatches summed over all ranks)
#   PASS|FAIL multinode/<cfg>                every rank exited 0 within its time limit
#   INFO lines                               bytes on each rail and through the spine
#   PASS|FAIL|SKIP multinode-rail-locality/<cfg>  spine < 1% of the bytes and rails within 20%
#   PASS|FAIL|SKIP multinode-calib/<op>/<algo>    model within 25% of the capped bed (calib.sh)
# Ranks within a node talk over shared memory, across nodes over TCP. NIC choice (column nic):
#   auto   NCCL_SOCKET_IFNAME=rail for every rank: the library gives local rank i the NIC of rail
#          i mod R and binds its sockets to it (docs/multinode.md); the bed runs with --route0,
#          so an unbound socket would cross the spine: the locality check tests the library.
#   fixed  NCCL_SOCKET_IFNAME=rail<i mod R> per rank: each rank may use one NIC only, so pairs on
#          different rails (all-to-all) must cross the spine; no locality verdict.
# Not root, or no network namespaces: SKIP.
#   BUILD=build   MN_RATE=1gbit (cap every NIC)   MN_RANK_LIMIT=90 (seconds per rank)
#   tests/multinode/run.sh [CFG...]  e.g. 2n2r2l, or calib
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 2
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
BED=$PWD/tests/multinode/bed.sh
BIN=$BUILD/tests/multinode/mn_colls
SHIM=$BUILD/tests/multinode/bindsrc.so
RANK_LIMIT=${MN_RANK_LIMIT:-90}
[[ $BUILD == *asan* ]] && RANK_LIMIT=$((RANK_LIMIT * 3))
export BED_ID=acbed-$$
export BED_NET=${BED_NET:-213}

# name K R L nic(auto/fixed) rate unique-id(file: rank 0 writes it; commid: NCCL_COMM_ID on node 0)
# A name ending in -nospine builds a bed whose spine forwards nothing (rails unreachable from each
# other): bootstrap and every collective must still work. A name ending in -railsplit runs the collectives on ncclCommSplit(color = local rank): one
# sub-communicator per rail, the traffic rail-optimized rings would give (the locality check's
# positive control).
CONFIGS=(
    "2n1r1l 2 1 1 auto - file"
    "2n2r2l 2 2 2 auto - file"
    "4n2r2l 4 2 2 auto - file"
    "2n2r2l-fixednic 2 2 2 fixed - file"
    "2n2r2l-nospine 2 2 2 auto - file"
    "2n2r2l-rate200mbit 2 2 2 auto 200mbit file"
    "3n2r1l-commid 3 2 1 auto - commid"
    "4n2r2l-railsplit 4 2 2 auto - file"
)
COMM_ID_PORT=29517

failed=0
pids=()
TMP=""

fail() {
    echo "FAIL $*"
    failed=1
}

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null
    done
    "$BED" down 2>/dev/null
    [[ -n $TMP ]] && rm -rf "$TMP"
}

# Reasons to skip: this needs root, iproute2 and a kernel with namespaces, veth and bridges.
skip_reason() {
    local probe=$BED_ID-probe why=""
    if [[ $(id -u) != 0 ]]; then
        echo "not root (network namespaces need CAP_SYS_ADMIN; run as root)"
        return
    fi
    command -v ip >/dev/null || { echo "ip (iproute2) not found"; return; }
    command -v timeout >/dev/null || { echo "timeout (coreutils) not found"; return; }
    if ! ip netns add "$probe" 2>/dev/null; then
        echo "ip netns add fails here (no network namespaces in this container?)"
        return
    fi
    if ! ip -n "$probe" link add mnprobe0 type veth peer name mnprobe1 2>/dev/null; then
        why="no veth support in this kernel"
    elif ! ip -n "$probe" link add mnprobebr type bridge 2>/dev/null; then
        why="no bridge support in this kernel"
    fi
    ip netns del "$probe" 2>/dev/null
    echo "$why"
}

counters() { # file
    "$BED" counters >"$1" 2>/dev/null
}

value() { # file key
    awk -v k="$2" '$1 == k { print $2 }' "$1"
}

# Starts rank `rank` (local rank i on node k) in the background; its pid goes to pids.
start_rank() { # name nranks k i L R nic idmode
    local name=$1 n=$2 k=$3 i=$4 nlocal=$5 nrails=$6 nic=$7 idmode=$8 ifname=rail rank
    local idfile=$TMP/$name.id comm_id=() split=0
    rank=$((k * nlocal + i))
    [[ $nic == fixed ]] && ifname=rail$((i % nrails))
    if [[ $idmode == commid ]]; then
        idfile=-
        comm_id=(NCCL_COMM_ID="10.$BED_NET.0.1:$COMM_ID_PORT")
    fi
    [[ $name == *-railsplit ]] && split=$nlocal
    timeout -k 5 "$RANK_LIMIT" "$BED" exec "$k" \
        env -u NCCL_COMM_ID -u ANYCCL_COMM_ID NCCL_SOCKET_IFNAME="$ifname" "${comm_id[@]}" \
        LD_PRELOAD="$SAN_PRELOAD" \
        "$BIN" "multinode/$name" "$rank" "$n" "$idfile" "$RANK_LIMIT" "$split" \
        >"$TMP/$name.$rank.out" 2>"$TMP/$name.$rank.err" &
    pids+=($!)
}

# Waits for every rank; prints rank 0's PASS/FAIL lines and the configuration's own line.
collect() { # name nranks
    local name=$1 n=$2 r rc bad=""
    for ((r = 0; r < n; r++)); do
        wait "${pids[r]}"
        rc=$?
        if ((rc == 124 || rc == 137)); then
            bad+=" rank $r timed out after ${RANK_LIMIT}s;"
        elif ((rc != 0)); then
            bad+=" rank $r exited with status $rc;"
        fi
    done
    pids=()
    for ((r = 0; r < n; r++)); do # rank 0 (of each sub-communicator) reports
        grep -hE '^(PASS|FAIL|SKIP|INFO) ' "$TMP/$name.$r.out"
    done
    if [[ -n $bad ]]; then
        fail "multinode/$name:$bad"
        for ((r = 0; r < n; r++)); do
            [[ -s $TMP/$name.$r.err ]] || continue
            echo "  rank $r stderr:"
            head -n 8 "$TMP/$name.$r.err" | sed 's/^/    /'
        done
        return 1
    fi
    echo "PASS multinode/$name"
}

pct() { # part whole
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b > 0 ? 100 * a / b : 0) }'
}

# INFO lines from the counters' deltas, and the rail-locality verdict.
traffic() { # name R L nic before after ok(1/0)
    local name=$1 nrails=$2 nlocal=$3 nic=$4 b=$5 a=$6 ok=$7 r d total spine line max=0 min=-1
    local spread
    total=$(($(value "$a" total_bytes) - $(value "$b" total_bytes)))
    spine=$(($(value "$a" spine_rx_bytes) - $(value "$b" spine_rx_bytes)))
    line="INFO multinode/$name: $total bytes sent onto the rails:"
    for ((r = 0; r < nrails; r++)); do
        d=$(($(value "$a" "rail${r}_bytes") - $(value "$b" "rail${r}_bytes")))
        line+=" rail$r $d ($(pct "$d" "$total")%)"
        ((d > max)) && max=$d
        ((min < 0 || d < min)) && min=$d
    done
    echo "$line; through the spine $spine ($(pct "$spine" "$total")%)"
    ((nrails > 1)) || return 0
    spread=$(pct $((max - min)) "$max")
    if ((nlocal < nrails)); then
        echo "SKIP multinode-rail-locality/$name: fewer ranks per node than rails (some rails" \
            "have no rank)"
    elif ((!ok)); then
        echo "SKIP multinode-rail-locality/$name: the run failed (counts above are partial)"
    elif [[ $nic == fixed ]]; then
        echo "SKIP multinode-rail-locality/$name: each rank may use only its own NIC" \
            "(NCCL_SOCKET_IFNAME=rail<i>), so pairs on different rails cross the spine"
    elif ((total > 0 && spine * 100 < total)) && awk -v s="$spread" 'BEGIN { exit !(s < 20) }'; then
        echo "PASS multinode-rail-locality/$name (spine $(pct "$spine" "$total")%, rails" \
            "differ by $spread%)"
    else
        fail "multinode-rail-locality/$name: spine $(pct "$spine" "$total")% of bytes, want" \
            "< 1%; rails differ by $spread%, want < 20%"
    fi
}

# A TCP connect from node 0 to a closed port of node 1 (the SYN and the RST that answers it),
# sourced from NIC `rail` when pinned; prints how many bytes the spine forwarded meanwhile.
probe_spine() { # dst-rail src-rail|- -> bytes
    local dst=$1 src=$2 before after env=()
    [[ $src != - ]] && env=(LD_PRELOAD="$SAN_PRELOAD$SHIM" MN_BIND_ADDR="10.$BED_NET.$src.1")
    counters "$TMP/probe.before"
    timeout 10 "$BED" exec 0 env "${env[@]}" bash -c \
        "exec 3<>/dev/tcp/10.$BED_NET.$dst.2/9" 2>/dev/null
    counters "$TMP/probe.after"
    before=$(value "$TMP/probe.before" spine_tx_bytes)
    after=$(value "$TMP/probe.after" spine_tx_bytes)
    echo $((after - before))
}

# The bed itself: traffic between NICs of different rails crosses the spine, traffic within a
# rail does not, and an unbound socket goes straight to the destination's rail.
bed_selftest() {
    local cross same unbound
    if ! "$BED" up 2 2 2>"$TMP/selftest.err"; then
        fail "multinode-bed: bed.sh up 2 2 failed: $(head -c 300 "$TMP/selftest.err")"
        return
    fi
    cross=$(probe_spine 0 1)
    same=$(probe_spine 0 0)
    unbound=$(probe_spine 1 -)
    "$BED" down
    if ((cross > 0)); then
        echo "PASS multinode-bed/cross-rail-via-spine"
    else
        fail "multinode-bed/cross-rail-via-spine: rail 1 -> rail 0 moved nothing through the spine"
    fi
    if ((same == 0 && unbound == 0)); then
        echo "PASS multinode-bed/same-rail-direct"
    else
        fail "multinode-bed/same-rail-direct: the spine forwarded $same bytes (rail 0 -> rail 0)" \
            "and $unbound bytes (unbound -> rail 1)"
    fi
}

run_config() { # name K R L nic rate idmode
    local name=$1 nnodes=$2 nrails=$3 nlocal=$4 nic=$5 rate=$6 idmode=$7 k i ok rate_args=()
    [[ $rate != - ]] && rate_args=(--rate "$rate")
    [[ -n ${MN_RATE:-} ]] && rate_args=(--rate "$MN_RATE")
    [[ $nic == auto ]] && rate_args+=(--route0)
    [[ $name == *-nospine ]] && rate_args+=(--nospine)
    if ! "$BED" up "$nnodes" "$nrails" "${rate_args[@]}" 2>"$TMP/$name.bed.err"; then
        fail "multinode/$name: bed.sh up $nnodes $nrails ${rate_args[*]} failed:" \
            "$(head -c 300 "$TMP/$name.bed.err")"
        "$BED" down 2>/dev/null
        return
    fi
    counters "$TMP/$name.before"
    for ((k = 0; k < nnodes; k++)); do
        for ((i = 0; i < nlocal; i++)); do
            start_rank "$name" $((nnodes * nlocal)) "$k" "$i" "$nlocal" "$nrails" "$nic" \
                "$idmode"
        done
    done
    ok=1
    collect "$name" $((nnodes * nlocal)) || ok=0
    cat "$TMP/$name".*.out | grep -q '^FAIL ' && ok=0
    ((ok)) || failed=1
    counters "$TMP/$name.after"
    traffic "$name" "$nrails" "$nlocal" "$nic" "$TMP/$name.before" "$TMP/$name.after" "$ok"
    "$BED" down
}

reason=$(skip_reason)
if [[ -n $reason ]]; then
    echo "SKIP multinode: $reason"
    exit 0
fi
for f in "$BIN" "$SHIM"; do
    if [[ ! -e $f ]]; then
        echo "FAIL multinode: $f is not built (run make test-build or make multinode)"
        exit 1
    fi
done
# A sanitized build needs its runtime first in LD_PRELOAD (before the shim).
SAN_PRELOAD=$(ldd "$BIN" | awk '/lib(a|ub)san/ { printf "%s ", $3 }')

trap cleanup EXIT
trap 'exit 130' INT TERM
TMP=$(mktemp -d "${TMPDIR:-/tmp}/multinode.XXXXXX")
(($# > 0)) || bed_selftest
for cfg in "${CONFIGS[@]}"; do
    read -r name nnodes nrails nlocal nic rate idmode <<<"$cfg"
    if (($# > 0)) && [[ " $* " != *" $name "* ]]; then
        continue
    fi
    run_config "$name" "$nnodes" "$nrails" "$nlocal" "$nic" "$rate" "$idmode"
done
(($# > 0)) || BUILD=$BUILD "$PWD/tests/multinode/linkdown.sh" || failed=1 # issue 6: link down
# GIN between the nodes (tests/multinode/gin.sh; run alone: CFG gin).
if (($# == 0)) || [[ " $* " == *" gin "* ]]; then
    BUILD=$BUILD "$PWD/tests/multinode/gin.sh" || failed=1
fi
# The cost model against the bed with tc caps (tests/multinode/calib.sh; run alone: CFG calib).
if (($# == 0)) || [[ " $* " == *" calib "* ]]; then
    BUILD=$BUILD "$PWD/tests/multinode/calib.sh" || failed=1
fi
exit $failed
