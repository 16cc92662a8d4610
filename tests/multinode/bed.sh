#!/usr/bin/env bash
# A rail-optimized multi-node cluster on one machine, made of network namespaces (issue 4).
#
#   bed.sh up K R [--rate RATE] [--route0] [--nospine]
#                                 K nodes with R NICs each (RATE: tc rate per NIC, e.g. 1gbit;
#                                 --route0: see "Routing" below; --nospine: the spine forwards
#                                 nothing, so the rails cannot reach each other)
#   bed.sh down                   removes every namespace (and so every link) of this bed
#   bed.sh exec NODE CMD...       runs CMD inside node NODE's namespace (or spine, fabric)
#   bed.sh counters [-v]          byte counters: spine, and what the nodes sent on each rail
#   bed.sh names                  the namespaces of this bed, one per line
#   bed.sh run K R [--rate RATE] -- CMD...   up, CMD (on the host, with BED_ID exported), down
#
# Layout (every interface lives in a namespace made here; the host's namespace is never touched):
#   <id>-node<k>   node k: NIC "rail<r>" = 10.<net>.<r>.<k+1>/24 for r < R; forwarding off
#   <id>-fabric    one Linux bridge "br<r>" per rail (the rail's switch); ports "n<k>r<r>" lead to
#                  node k's NIC r, port "sp<r>" to the spine
#   <id>-spine     the router between rails: "s<r>" = 10.<net>.<r>.254/24, ip_forward=1
# Routing in a node: the main table reaches each rail's subnet through that rail's NIC (a socket
# with no bound source goes straight to the destination's rail). Source-based rules send a packet
# whose source is NIC r's address through NIC r only: to rail r directly, to any other rail via the
# spine (10.<net>.<r>.254). So traffic that leaves on one rail for another crosses the spine and
# shows in its counters, as in a real rail-optimized fabric. With --route0 the main table reaches
# the other rails' subnets through rail 0 and the spine instead (a host whose routes all point at
# its first NIC): then only a socket bound to a NIC's address uses that NIC, which is what the
# rail tests check the library does.
#
# Environment: BED_ID (default acbed-<pid of the caller>; must be acbed-<pid> with the pid of a live
# process that owns the bed: namespaces of a dead owner are stale and removed by `up`), BED_NET
# (default 213: addresses 10.213.r.k), BED_BURST (tbf burst, default 256kb).
set -Eeuo pipefail

# `run` owns its bed; the other commands belong to the shell that calls them.
if [[ ${1:-} == run ]]; then
    BED_ID=${BED_ID:-acbed-$$}
else
    BED_ID=${BED_ID:-acbed-$PPID}
fi
BED_NET=${BED_NET:-213}
BED_BURST=${BED_BURST:-256kb}
MAX_NODES=32
MAX_RAILS=8

die() {
    echo "bed.sh: $*" >&2
    exit 2
}

[[ $BED_ID =~ ^acbed-[0-9]+$ ]] || die "BED_ID='$BED_ID' must be acbed-<pid of its owner>"
if ! [[ $BED_NET =~ ^[0-9]+$ ]] || ((BED_NET > 255)); then
    die "BED_NET='$BED_NET' must be 0..255"
fi

FAB=$BED_ID-fabric
SPINE=$BED_ID-spine
node_ns() { echo "$BED_ID-node$1"; }
addr() { echo "10.$BED_NET.$1.$2"; } # rail host

names() { ip netns list 2>/dev/null | awk '{ print $1 }' | grep -E "^$BED_ID-" || true; }

# Namespaces acbed-<pid>-* whose owner pid is gone: left by a run that was killed (SIGKILL skips
# every trap). Beds of live owners (parallel runs) are left alone.
remove_stale() {
    local ns pid
    for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }' | grep -E '^acbed-[0-9]+-'); do
        pid=${ns#acbed-}
        pid=${pid%%-*}
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "bed.sh: removing stale namespace $ns (owner $pid is gone)" >&2
            ip netns del "$ns" 2>/dev/null || true
        fi
    done
    for f in "${TMPDIR:-/tmp}"/acbed-*.bed; do
        [[ -e $f ]] || continue
        pid=${f##*/acbed-}
        pid=${pid%.bed}
        [[ $pid =~ ^[0-9]+$ ]] && ! kill -0 "$pid" 2>/dev/null && rm -f "$f"
    done
    return 0
}

down() {
    local ns
    for ns in $(names); do
        ip netns del "$ns" 2>/dev/null || echo "bed.sh: could not remove namespace $ns" >&2
    done
    rm -f "$(state_file)"
}

state_file() { echo "${TMPDIR:-/tmp}/$BED_ID.bed"; }

# A namespace with loopback up, no IPv6 (its router solicitations and MLD reports would add bytes
# to the counters) and no reverse-path filter (replies from the spine arrive on another NIC than
# the main table's route back).
make_ns() {
    local ns=$1
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # shellcheck disable=SC2016 # expanded by the inner sh
    ip netns exec "$ns" sh -c '
        for k in all default; do
            v6=/proc/sys/net/ipv6/conf/$k/disable_ipv6
            if [ -e $v6 ]; then echo 1 >$v6; fi
            echo 0 >/proc/sys/net/ipv4/conf/$k/rp_filter
            echo 1 >/proc/sys/net/ipv4/conf/$k/arp_ignore
            echo 2 >/proc/sys/net/ipv4/conf/$k/arp_announce
        done'
}

# Caps a link in both directions: tbf on the node's NIC (egress) and on its switch port (ingress).
cap() { # ns dev rate
    ip netns exec "$1" tc qdisc add dev "$2" root tbf rate "$3" burst "$BED_BURST" latency 100ms
}

make_rails() { # R forward(1/0)
    local r
    for ((r = 0; r < $1; r++)); do
        ip -n "$FAB" link add "br$r" type bridge forward_delay 0 stp_state 0
        ip -n "$FAB" link set "br$r" up
        ip -n "$FAB" link add "sp$r" type veth peer name "s$r" netns "$SPINE"
        ip -n "$FAB" link set "sp$r" master "br$r" up
        ip -n "$SPINE" addr add "$(addr "$r" 254)/24" dev "s$r"
        ip -n "$SPINE" link set "s$r" up
    done
    ip netns exec "$SPINE" sh -c "echo $2 >/proc/sys/net/ipv4/ip_forward"
}

make_node() { # k R rate route0(1/0)
    local k=$1 nrails=$2 rate=$3 route0=$4 ns r a
    ns=$(node_ns "$k")
    make_ns "$ns"
    for ((r = 0; r < nrails; r++)); do
        a=$(addr "$r" $((k + 1)))
        ip -n "$FAB" link add "n${k}r$r" type veth peer name "rail$r" netns "$ns"
        ip -n "$FAB" link set "n${k}r$r" master "br$r" up
        ip -n "$ns" addr add "$a/24" dev "rail$r"
        ip -n "$ns" link set "rail$r" up
        ip -n "$ns" route add "10.$BED_NET.$r.0/24" dev "rail$r" src "$a" table $((100 + r))
        if ((nrails > 1)); then
            ip -n "$ns" route add "10.$BED_NET.0.0/16" via "$(addr "$r" 254)" dev "rail$r" \
                table $((100 + r))
        fi
        ip -n "$ns" rule add from "$a" table $((100 + r)) pref $((1000 + r))
        if ((route0 && r > 0)); then
            ip -n "$ns" route del "10.$BED_NET.$r.0/24" dev "rail$r"
            ip -n "$ns" route add "10.$BED_NET.$r.0/24" via "$(addr 0 254)" dev rail0
        fi
        if [[ -n $rate ]]; then
            cap "$ns" "rail$r" "$rate"
            cap "$FAB" "n${k}r$r" "$rate"
        fi
    done
}

up() {
    local nnodes=${1:-} nrails=${2:-} rate="" route0=0 forward=1 k
    [[ $nnodes =~ ^[0-9]+$ && $nrails =~ ^[0-9]+$ ]] ||
        die "usage: bed.sh up K R [--rate RATE] [--route0] [--nospine]"
    ((nnodes >= 1 && nnodes <= MAX_NODES)) || die "K=$nnodes: 1..$MAX_NODES nodes"
    ((nrails >= 1 && nrails <= MAX_RAILS)) || die "R=$nrails: 1..$MAX_RAILS rails"
    shift 2
    while (($# > 0)); do
        case $1 in
        --rate) rate=${2:?--rate needs a value such as 1gbit}; shift 2 ;;
        --route0) route0=1; shift ;;
        --nospine) forward=0; shift ;;
        *) die "unknown argument '$1'" ;;
        esac
    done
    remove_stale
    [[ -z $(names) ]] || die "bed $BED_ID is already up (bed.sh down first)"
    # A failure half-way leaves nothing behind.
    trap 'echo "bed.sh: setting up $BED_ID failed; removing it" >&2; down' ERR
    trap 'down; exit 130' INT TERM
    make_ns "$FAB"
    make_ns "$SPINE"
    make_rails "$nrails" "$forward"
    for ((k = 0; k < nnodes; k++)); do
        make_node "$k" "$nrails" "$rate" "$route0"
    done
    echo "K=$nnodes R=$nrails RATE=$rate" >"$(state_file)"
    trap - ERR INT TERM
}

load_state() {
    [[ -r $(state_file) ]] || die "bed $BED_ID is not up (no $(state_file))"
    # shellcheck disable=SC1090
    source "$(state_file)"
}

stat_of() { # ns dev rx|tx
    ip netns exec "$1" cat "/sys/class/net/$2/statistics/$3_bytes"
}

# Key-value lines: spine_rx_bytes (what crossed rails), rail<r>_bytes (what the nodes put on rail
# r, counted at their switch ports) and total_bytes (all rails). -v adds one line per interface.
counters() {
    local verbose=${1:-} r k rx tx srx=0 stx=0 total=0 rail
    load_state
    for ((r = 0; r < R; r++)); do
        rx=$(stat_of "$SPINE" "s$r" rx)
        tx=$(stat_of "$SPINE" "s$r" tx)
        srx=$((srx + rx)) stx=$((stx + tx))
        [[ -z $verbose ]] || echo "spine.s$r rx=$rx tx=$tx"
    done
    echo "spine_rx_bytes $srx"
    echo "spine_tx_bytes $stx"
    for ((r = 0; r < R; r++)); do
        rail=0
        for ((k = 0; k < K; k++)); do
            rx=$(stat_of "$FAB" "n${k}r$r" rx)
            rail=$((rail + rx))
            [[ -z $verbose ]] || echo "node$k.rail$r tx=$rx rx=$(stat_of "$FAB" "n${k}r$r" tx)"
        done
        echo "rail${r}_bytes $rail"
        total=$((total + rail))
    done
    echo "total_bytes $total"
}

bed_exec() { # NODE: a node number, spine or fabric
    local k=${1:-} ns
    case $k in
    spine) ns=$SPINE ;;
    fabric) ns=$FAB ;;
    *) [[ $k =~ ^[0-9]+$ ]] && ns=$(node_ns "$k") ;;
    esac
    [[ -n ${ns:-} ]] || die "usage: bed.sh exec NODE|spine|fabric CMD..."
    shift
    (($# > 0)) || die "usage: bed.sh exec NODE|spine|fabric CMD..."
    exec ip netns exec "$ns" "$@"
}

# up, CMD, down: the bed is removed however CMD ends (a signal to this script included).
run_with_bed() {
    local args=() rc=0
    while (($# > 0)) && [[ $1 != -- ]]; do
        args+=("$1")
        shift
    done
    (($# > 1)) || die "usage: bed.sh run K R [--rate RATE] -- CMD..."
    shift
    trap down EXIT
    trap 'exit 130' INT TERM
    up "${args[@]}"
    export BED_ID BED_NET
    "$@" || rc=$?
    return "$rc"
}

cmd=${1:-}
shift || true
case $cmd in
up) up "$@" ;;
down) down ;;
exec) bed_exec "$@" ;;
counters) counters "$@" ;;
names) names ;;
run) run_with_bed "$@" ;;
*)
    die "usage: bed.sh up K R [--rate RATE] | down | exec NODE|spine|fabric CMD..." \
        "| counters [-v] | names | run K R [--rate RATE] -- CMD..."
    ;;
esac
