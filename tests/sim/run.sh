#!/usr/bin/env bash
# anyccl-sim (tools/anyccl-sim.c): the command line of issue 4 works on the shipped topologies,
# up to 16,384 nodes, quickly and in little memory; the pick is the cheapest algorithm; bad
# arguments are refused with status 2. One "PASS|FAIL <name>" line per check.
# Environment: BUILD (default build).
set -u
export LC_ALL=C

cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
SIM=$BUILD/bin/anyccl-sim
failed=0
pass() { echo "PASS sim/$1"; }
fail() {
    echo "FAIL sim/$1: $2"
    failed=1
}

if [[ ! -x $SIM ]]; then
    echo "FAIL sim: $SIM is not built (make tools)"
    exit 1
fi

# 1 GiB allreduce on 16,384 DGX H100 nodes: Ring and Tree rows, one pick, within 10 s and 200 MB.
out=$(command time -f '%M %e' -o /tmp/sim-time.$$ timeout 20 "$SIM" \
    --topo topologies/dgx-h100.xml --nodes 16384 --op allreduce --bytes 1G 2>&1)
rc=$?
read -r rss_kb secs </tmp/sim-time.$$ 2>/dev/null || { rss_kb=0 secs=0; }
rm -f /tmp/sim-time.$$
rows=$(grep -cE '^ +1073741824 AllReduce +(Ring|Tree) ' <<<"$out")
picks=$(grep -c '<- pick' <<<"$out")
if ((rc == 0 && rows == 2 && picks == 1)) && grep -q '131072 ranks' <<<"$out"; then
    pass "dgx-16384-nodes"
else
    fail "dgx-16384-nodes" "status $rc, $rows rows, $picks picks: $(head -c 400 <<<"$out")"
fi
if ((rss_kb > 0)) && awk -v m="$rss_kb" -v s="$secs" 'BEGIN { exit !(m < 200000 && s < 10) }'; then
    pass "dgx-16384-nodes-bounded (${rss_kb} kB, ${secs} s)"
elif ((rss_kb == 0)); then
    echo "SKIP sim/dgx-16384-nodes-bounded: GNU time not available"
else
    fail "dgx-16384-nodes-bounded" "${rss_kb} kB, ${secs} s (want < 200 MB, < 10 s)"
fi

# The pick is the row with the smallest time, for every op and size of a range.
out=$("$SIM" --topo topologies/mi300x-8.xml --nodes 64 --op all -b 1M -e 1G -f 8 2>&1)
rc=$?
bad=$(awk '!/^#/ { key = $1 " " $2; t = $4 + 0
        if (!(key in best) || t < best[key]) best[key] = t
        if ($NF == "pick") picked[key] = t }
    END { n = 0; for (k in best) if (!(k in picked) || picked[k] != best[k]) n++; print n }' \
    <<<"$out")
nrows=$(grep -cvE '^#' <<<"$out")
if ((rc == 0 && bad == 0 && nrows >= 32)); then
    pass "mi300x-range-picks-cheapest"
else
    fail "mi300x-range-picks-cheapest" "status $rc, $nrows rows, $bad sizes whose pick is not the cheapest"
fi

# Refusals: too many nodes, an unknown op, no size.
refused=0
"$SIM" --nodes 16385 --bytes 1M >/dev/null 2>&1 || ((refused += $? == 2))
"$SIM" --nodes 2 --op allsum --bytes 1M >/dev/null 2>&1 || ((refused += $? == 2))
"$SIM" --nodes 2 >/dev/null 2>&1 || ((refused += $? == 2))
if ((refused == 3)); then
    pass "bad-arguments"
else
    fail "bad-arguments" "$refused of 3 bad command lines exited with status 2"
fi
exit $failed
