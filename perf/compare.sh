#!/usr/bin/env bash
# AnyCCL against Open MPI on this machine, in one command (docs/performance.md explains the
# method and the limits). For every collective, transport (shm, tcp) and rank count it runs
# AnyCCL's perf binary and perf/mpi_coll_bench alternately (launch by launch, one size tier at
# a time) R times with the same mpirun options, keeps the median time per size, measures the
# machine's limits (memcpy, float add, TCP loopback) before and after, and writes CSV, text
# tables and gnuplot PNGs into one results folder.
#
# Usage: perf/compare.sh [--quick] [-r R] [-f FACTOR] [-e MAXBYTES] [-o OUTDIR]
#                        [-c "allreduce allgather ..."] [-n "2 4"] [-t "shm tcp"] [-R 0|1]
#        perf/compare.sh -S OUTDIR    (tables and plots again from OUTDIR's raw.csv, probes.csv)
# -R 1 (default): AnyCCL's buffers come from ncclMemAlloc and are registered (nccl-tests' -R 1),
# which lets ranks of one host read each other's buffers in place; -R 0: plain malloc, as
# Open MPI's. Environment: QUICK=1, R, FACTOR, MAXBYTES, OUT, COLLS, NRANKS, TRANSPORTS,
# REGISTER (same meanings), RUN_TIMEOUT (seconds per launch, default 300), BUILD.
# Internal (mk/compare.mk): COMPARE_DEPS_ONLY=1 installs what is missing and stops;
# COMPARE_NO_BUILD=1 skips the make step.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
BUILD=${BUILD:-build}
QUICK=${QUICK:-0}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
ALL_COLLS="allreduce allgather reduce_scatter broadcast alltoall"

die() {
    echo "compare: $*" >&2
    exit 1
}

log() {
    echo "[$(date -u +%H:%M:%S)] $*" >&2
}

usage() {
    sed -n '9,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

parse_args() {
    while (($# > 0)); do
        case $1 in
        --quick) QUICK=1 ;;
        -r) R=$2; shift ;;
        -f) FACTOR=$2; shift ;;
        -e) MAXBYTES=$2; shift ;;
        -o) OUT=$2; shift ;;
        -S) SUMMARIZE_ONLY=$2; shift ;;
        -c) COLLS=$2; shift ;;
        -n) NRANKS=$2; shift ;;
        -t) TRANSPORTS=$2; shift ;;
        -R) REGISTER=$2; shift ;;
        -h | --help) usage 0 ;;
        *) echo "compare: unknown argument '$1'" >&2; usage 2 ;;
        esac
        shift
    done
}

# QUICK=1: a smoke test (7 sizes up to 2 MiB, 2 repeats, each about a minute in all).
set_defaults() {
    if [[ $QUICK == 1 ]]; then
        R=${R:-2} FACTOR=${FACTOR:-8} MAXBYTES=${MAXBYTES:-2M}
    else
        R=${R:-3} FACTOR=${FACTOR:-4} MAXBYTES=${MAXBYTES:-256M}
    fi
    MINBYTES=8
    COLLS=${COLLS:-$ALL_COLLS}
    NRANKS=${NRANKS:-2 4}
    TRANSPORTS=${TRANSPORTS:-shm tcp}
    REGISTER=${REGISTER:-1}
    [[ $REGISTER == 0 || $REGISTER == 1 ]] || die "-R takes 0 or 1 (got '$REGISTER')"
    OUT=${OUT:-results/compare-$(date -u +%Y%m%d-%H%M%S)}
    [[ $R =~ ^[1-9][0-9]*$ ]] || die "R must be a positive integer (got '$R')"
    if ! [[ $FACTOR =~ ^[0-9]+$ ]] || ((FACTOR < 2)); then
        die "FACTOR must be an integer >= 2 (got '$FACTOR')"
    fi
    MAXB=$(to_bytes "$MAXBYTES") || die "MAXBYTES: '$MAXBYTES' is not a size (e.g. 256M)"
    local c
    for c in $COLLS; do
        [[ " $ALL_COLLS " == *" $c "* ]] || die "unknown collective '$c' (one of: $ALL_COLLS)"
    done
}

to_bytes() {
    local v=$1 mul=1
    case $v in
    *K) mul=1024 v=${v%K} ;;
    *M) mul=$((1 << 20)) v=${v%M} ;;
    *G) mul=$((1 << 30)) v=${v%G} ;;
    esac
    [[ $v =~ ^[0-9]+$ ]] || return 1
    echo $((v * mul))
}

# Open MPI and gnuplot, installed only when missing.
install_deps() {
    local missing=()
    if ! command -v mpirun >/dev/null || ! command -v mpicc >/dev/null; then
        missing+=(openmpi-bin libopenmpi-dev)
    fi
    command -v gnuplot >/dev/null || missing+=(gnuplot-nox)
    ((${#missing[@]} == 0)) && return 0
    [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}: run" \
        "sudo apt-get install -y ${missing[*]}"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get update -qq ||
        ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
        die "apt-get install ${missing[*]} failed"
    fi
}

# The perf binaries must be linked with MPI to run as mpirun processes: binaries built before
# Open MPI was installed are relinked from objects recompiled with mpicc (their NEEDED entries
# tell, even while the library itself is being rebuilt by others).
build() {
    local t bin=$BUILD/bin/all_reduce_perf
    if [[ ${COMPARE_NO_BUILD:-0} != 1 ]]; then
        # Others may be mid-edit: a failed build falls back to the binaries already built.
        make --no-print-directory -s BUILD="$BUILD" compare-tools >&2 ||
            die "make compare-tools failed"
        make --no-print-directory -s BUILD="$BUILD" all >&2 ||
            log "make all failed: using the binaries already in $BUILD"
    fi
    if [[ -x $bin ]] && ! readelf -d "$bin" 2>/dev/null | grep -q 'NEEDED.*libmpi'; then
        log "perf binaries were built without MPI: rebuilding them with mpicc"
        rm -rf "$BUILD/perf-obj"
        make --no-print-directory -s BUILD="$BUILD" perf >&2 || die "make perf failed"
    fi
    for t in bin/all_reduce_perf compare/mpi_coll_bench compare/probe_mem compare/probe_tcp; do
        [[ -x $BUILD/$t ]] || die "$BUILD/$t missing: run make (the library must build)"
    done
}

# Sizes of the sweep: MAXBYTES divided by FACTOR while at least 8 B (x4: 16 B .. 256 MiB), so
# the largest size is always measured; split in tiers that get fewer iterations as sizes grow.
make_tiers() {
    local s=$MAXB tier sizes=()
    declare -gA TIERS=([tiny]="" [small]="" [mid]="" [large]="")
    while ((s >= MINBYTES)); do
        sizes=("$s" "${sizes[@]}")
        s=$((s / FACTOR))
    done
    for s in "${sizes[@]}"; do
        if ((s < 64 << 10)); then tier=tiny
        elif ((s < 1 << 20)); then tier=small
        elif ((s < 32 << 20)); then tier=mid
        else tier=large; fi
        TIERS[$tier]+="$s "
    done
}

# Iterations and warm-up calls per tier. Calls below 64 KiB take 0.3-100 us: a mean over 20
# of them moved by a third from one launch to the next, so they get many more.
tier_iters() {
    case $1 in
    tiny) echo "-n 1000 -w 100" ;;
    small) echo "-n 50 -w 5" ;;
    mid) echo "-n 10 -w 1" ;;
    large) echo "-n 2 -w 0" ;; # the untimed first call of each size still warms up
    esac
}

perf_binary() {
    case $1 in
    allreduce) echo all_reduce_perf ;;
    allgather) echo all_gather_perf ;;
    *) echo "${1}_perf" ;;
    esac
}

# The mpirun command line, the same for both libraries: the btl options steer Open MPI's
# traffic (pml ob1 so that they apply), the ANYCCL_* variables AnyCCL's (they win over NCCL_*).
# A private session directory avoids clashes with other users' concurrent mpirun.
set_mpirun() {
    local tr=$1 n=$2
    MPIRUN=(mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$n"
        --mca orte_tmpdir_base "$OMPI_TMP" --mca pml ob1)
    if [[ $tr == shm ]]; then
        MPIRUN+=(--mca btl 'vader,self' -x ANYCCL_SHM_DISABLE=0)
    else
        MPIRUN+=(--mca btl 'tcp,self' --mca btl_tcp_if_include lo
            -x ANYCCL_SHM_DISABLE=1 -x ANYCCL_SOCKET_IFNAME=lo)
    fi
}

# Runs one library once over every tier of the sweep; appends its rows to raw.csv.
# Rows: lib,coll,transport,nranks,rep,size,time_us,algbw,busbw: AnyCCL's out-of-place columns,
# but its in-place ones for broadcast, which MPI_Bcast is by nature (the root copies nothing).
run_lib() {
    local lib=$1 coll=$2 tr=$3 n=$4 rep=$5 tier=$6 cmd logf try rc sizes
    set_mpirun "$tr" "$n"
    read -ra sizes <<<"${TIERS[$tier]}"
    ((${#sizes[@]} > 0)) || return 0
    local sweep iters
    iters=$(tier_iters "$tier")
    sweep="-b ${sizes[0]} -e ${sizes[-1]} -f $FACTOR $iters"
    if [[ $lib == anyccl ]]; then
        cmd="$BUILD/bin/$(perf_binary "$coll") $sweep -c 0 -R $REGISTER"
    else
        cmd="$BUILD/compare/mpi_coll_bench -C $coll $sweep"
    fi
    logf="$OUT/logs/${lib}_${coll}_${tr}_np${n}_r${rep}_${tier}.log"
    for try in 1 2 3; do
        # shellcheck disable=SC2086 # cmd is split on purpose
        timeout -k 10 "$RUN_TIMEOUT" "${MPIRUN[@]}" $cmd >"$logf" 2>&1
        rc=$?
        ((rc == 0)) && break
        log "  $lib $coll $tr np=$n rep $rep $tier: exit $rc (try $try), see $logf"
    done
    if ((rc != 0)); then
        echo "$lib,$coll,$tr,$n,$rep,$tier,exit $rc,$logf" >>"$OUT/failures.csv"
        return 0
    fi
    local col=6
    [[ $lib == anyccl && $coll == broadcast ]] && col=10
    awk -v pre="$lib,$coll,$tr,$n,$rep" -v c=$col '!/^#/ && NF >= c + 2 && $1 ~ /^[0-9]+$/ &&
        $1 > 0 { print pre "," $1 "," $c "," $(c + 1) "," $(c + 2) }' "$logf" >>"$OUT/raw.csv"
}

# R rounds per configuration. The machine's speed changes within seconds (a virtual machine's
# cores placed apart or together: docs/performance.md), so the two libraries alternate launch by
# launch, one size tier at a time, and take turns going first: each tier's AnyCCL and Open MPI
# launches of a round run a few seconds apart.
run_all() {
    local coll tr n rep tier cfg=0 ncfg
    ncfg=$(($(wc -w <<<"$COLLS") * $(wc -w <<<"$TRANSPORTS") * $(wc -w <<<"$NRANKS")))
    echo "lib,coll,transport,nranks,rep,size,time_us,algbw,busbw" >"$OUT/raw.csv"
    for tr in $TRANSPORTS; do
        for n in $NRANKS; do
            for coll in $COLLS; do
                cfg=$((cfg + 1))
                log "[$cfg/$ncfg] $coll $tr np=$n: $R x (AnyCCL, Open MPI)"
                for ((rep = 1; rep <= R; rep++)); do
                    for tier in tiny small mid large; do
                        if ((rep % 2)); then
                            run_lib anyccl "$coll" "$tr" "$n" "$rep" "$tier"
                            run_lib mpi "$coll" "$tr" "$n" "$rep" "$tier"
                        else
                            run_lib mpi "$coll" "$tr" "$n" "$rep" "$tier"
                            run_lib anyccl "$coll" "$tr" "$n" "$rep" "$tier"
                        fi
                    done
                done
            done
        done
    done
}

# Machine limits: best of the probe runs made before and after the benchmarks.
probe_limits() {
    local when=$1 mem tcp tcp_all
    mem=$("$BUILD/compare/probe_mem" -s 256M -r 5) || die "probe_mem failed"
    tcp=$("$BUILD/compare/probe_tcp" -t 1G -r 5) || die "probe_tcp failed"
    tcp_all=$("$BUILD/compare/probe_tcp" -t 512M -r 5 -s "$(nproc)") || die "probe_tcp -s failed"
    printf '%s\n%s\n%s\n' "$mem" "$tcp" "$tcp_all" | sed "s/^/$when /" | tr ' ' ',' \
        >>"$OUT/probes.csv"
    echo "$when,$(cut -d' ' -f1-3 /proc/loadavg)" | tr ' ' ',' >>"$OUT/load.csv"
}

# Best limit of the probe runs, in GB/s: probes.csv rows are when,what,best,median; column 4
# takes the best median instead.
best_probe() {
    awk -F, -v w="$1" -v c="${2:-3}" '$2 == w && $c > b { b = $c } END { printf "%.3f", b }' \
        "$OUT/probes.csv"
}

# The awk program of summarize.
summary_awk() {
    cat <<'AWK'
# perf/compare.sh's reduction of raw.csv (lib,coll,transport,nranks,rep,size,time_us,algbw,
# busbw) to one row per (coll, transport, nranks, size): medians, ratios and limits. Variables:
# copy, add, tcp (GB/s, the probes' best; tcp: all cores' streams together) and cores.
# The limit model is docs/performance.md's:
# X bytes cross between ranks, L bytes are copied locally, A bytes are reduced (y += x), all
# counted over the whole job, spread over P = min(nranks, cores) cores.

function bus_factor(coll, n) {
    if (coll == "allreduce") return 2.0 * (n - 1) / n
    if (coll == "broadcast") return 1.0
    return (n - 1.0) / n
}

# Lower bound of the time in microseconds (GB/s = 1e3 bytes/us).
function bound_us(coll, tr, n, s,    x, l, a, p) {
    x = (n - 1) * s; l = s; a = 0
    if (coll == "allreduce") { x = 2 * (n - 1) * s; l = 0; a = (n - 1) * s }
    if (coll == "reduce_scatter") { l = 0; a = (n - 1) * s }
    p = n < cores ? n : cores
    if (tr == "shm")
        return (x + l) / (p * copy * 1e3) + a / (p * add * 1e3)
    return x / (tcp * 1e3) + l / (p * copy * 1e3) + a / (p * add * 1e3)
}

function median(key,    cnt, i, j, v, tmp) {
    cnt = nval[key]
    for (i = 1; i <= cnt; i++) tmp[i] = val[key, i]
    for (i = 2; i <= cnt; i++) {
        v = tmp[i]
        for (j = i - 1; j >= 1 && tmp[j] > v; j--) tmp[j + 1] = tmp[j]
        tmp[j + 1] = v
    }
    return cnt % 2 ? tmp[(cnt + 1) / 2] : (tmp[cnt / 2] + tmp[cnt / 2 + 1]) / 2
}

NR > 1 && $7 > 0 {
    cfg = $2 "," $3 "," $4 "," $6
    key = $1 "," cfg
    val[key, ++nval[key]] = $7
    seen[cfg] = 1
}

END {
    for (cfg in seen) {
        split(cfg, f, ",")
        coll = f[1]; tr = f[2]; n = f[3]; s = f[4]
        bf = bus_factor(coll, n)
        ta = nval["anyccl," cfg] ? median("anyccl," cfg) : 0
        tm = nval["mpi," cfg] ? median("mpi," cfg) : 0
        ba = ta > 0 ? s / ta / 1e3 * bf : 0
        bm = tm > 0 ? s / tm / 1e3 * bf : 0
        tb = bound_us(coll, tr, n, s)
        bb = s / tb / 1e3 * bf
        both = ta > 0 && tm > 0
        rb = both ? sprintf("%.3f", tm / ta) : ""
        rt = both ? sprintf("%.3f", ta / tm) : ""
        fa = ta > 0 ? sprintf("%.3f", tb / ta) : ""
        fm = tm > 0 ? sprintf("%.3f", tb / tm) : ""
        # mawk reads an unparenthesized ">" in a printf argument as a redirection.
        printf "%s,%.3f,%.6g,%.3f,%.6g,%s,%s,%.6g,%s,%s,%d,%d\n", cfg, ta, ba, tm, bm, rb, rt,
            bb, fa, fm, nval["anyccl," cfg], nval["mpi," cfg]
    }
}
AWK
}

# summary.csv: per (coll, transport, nranks, size) the median time of each library, the busbw
# derived from it with nccl-tests' formula, the ratios and the fraction of the limit.
summarize() {
    local copy add tcp tcp_all cores
    cores=$(nproc)
    copy=$(best_probe copy) add=$(best_probe add) tcp=$(best_probe tcp)
    # Streams sharing the cores vary run to run (threads' placement); their best run is an
    # outlier on a loaded machine, the median is kept.
    tcp_all=$(best_probe "tcp${cores}x" 4)
    [[ $tcp_all == 0.000 ]] && tcp_all=$tcp # one core, or a folder from before -s existed
    echo "copy_GBps,add_GBps,tcp_GBps,tcp_all_cores_GBps,cores" >"$OUT/limits.csv"
    echo "$copy,$add,$tcp,$tcp_all,$cores" >>"$OUT/limits.csv"
    {
        echo "coll,transport,nranks,size,anyccl_time_us,anyccl_busbw,mpi_time_us,mpi_busbw,"`
            `"busbw_ratio,time_ratio,limit_busbw,anyccl_frac_limit,mpi_frac_limit,"`
            `"anyccl_reps,mpi_reps"
        awk -F, -v copy="$copy" -v add="$add" -v tcp="$tcp_all" -v cores="$cores" \
            "$(summary_awk)" "$OUT/raw.csv" |
            sort -t, -k1,1 -k2,2 -k3,3n -k4,4n
    } >"$OUT/summary.csv"
}

# summary.txt: one table per (coll, transport, nranks) from summary.csv.
write_tables() {
    awk -F, 'NR == 1 { next }
    function hdr() {
        printf "\n%s over %s, %d ranks (busbw in GB/s; ratio > 1: AnyCCL faster)\n", $1, $2, $3
        printf "%10s %10s %8s %10s %8s %8s %8s %8s %7s %7s\n", "size(B)", "AnyCCL_us",
            "AnyCCL", "MPI_us", "MPI", "bw_ratio", "t_ratio", "limit", "Any%lim", "MPI%lim"
    }
    $1 "," $2 "," $3 != cur { cur = $1 "," $2 "," $3; hdr() }
    { printf "%10d %10.2f %8.3f %10.2f %8.3f %8s %8s %8.2f %7.1f %7.1f\n", $4, $5, $6, $7, $8,
        $9, $10, $11, 100 * $12, 100 * $13 }' "$OUT/summary.csv"
}

# overview.txt: one line per configuration: smallest size (latency) and largest (bandwidth).
write_overview() {
    awk -F, 'NR == 1 { next }
    { cfg = $1 "," $2 "," $3 }
    !(cfg in first) { first[cfg] = $0; order[++n] = cfg }
    { last[cfg] = $0 }
    END {
        printf "%-15s %-4s %3s | %7s %9s %9s %7s | %8s %8s %8s %7s %7s %7s\n", "collective",
            "tr", "np", "small", "AnyCCL_us", "MPI_us", "t_ratio", "large", "AnyCCL",
            "MPI", "ratio", "Any%lim", "MPI%lim"
        for (i = 1; i <= n; i++) {
            split(first[order[i]], a, ","); split(last[order[i]], b, ",")
            printf "%-15s %-4s %3d | %7s %9.2f %9.2f %7s | %8s %8.3f %8.3f %7s %7.1f %7.1f\n",
                a[1], a[2], a[3], human(a[4]), a[5], a[7], a[10], human(b[4]), b[6], b[8],
                b[9], 100 * b[12], 100 * b[13]
        }
    }
    function human(s) {
        if (s >= 1048576) return sprintf("%dM", s / 1048576)
        if (s >= 1024) return sprintf("%dK", s / 1024)
        return s "B"
    }' "$OUT/summary.csv"
}

# One PNG per (coll, transport, nranks): busbw vs size for both libraries and the limit.
plot_all() {
    if ! command -v gnuplot >/dev/null; then
        log "gnuplot missing: no plots (apt-get install gnuplot-nox)"
        return 0
    fi
    mkdir -p "$OUT/plots"
    awk -F, -v dir="$OUT/plots" 'NR > 1 {
        f = dir "/" $1 "_" $2 "_np" $3 ".csv"
        if (!(f in seen)) { seen[f] = 1; print "size,anyccl_busbw,mpi_busbw,limit_busbw" > f }
        print $4 "," $6 "," $8 "," $11 > f }' "$OUT/summary.csv"
    local f base
    for f in "$OUT"/plots/*.csv; do
        base=$(basename "$f" .csv)
        gnuplot -c "$ROOT/perf/plot.gp" "$f" "$OUT/plots/$base.png" \
            "${base//_/ } ($(nproc) cores)" 2>>"$OUT/plots/gnuplot.log" ||
            log "gnuplot failed for $base (see $OUT/plots/gnuplot.log)"
    done
}

write_meta() {
    {
        echo "date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "host=$(hostname) cores=$(nproc) cpu=$(grep -m1 'model name' /proc/cpuinfo |
            cut -d: -f2 | sed 's/^ //')"
        echo "anyccl_commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
        echo "open_mpi=$(mpirun --version 2>/dev/null | head -1)"
        echo "repeats=$R factor=$FACTOR sizes=${TIERS[*]} quick=$QUICK"
        echo "colls=$COLLS transports=$TRANSPORTS nranks=$NRANKS"
        echo "anyccl_registered_buffers=$REGISTER"
        echo "mpirun_shm=$(set_mpirun shm N; echo "${MPIRUN[*]}")"
        echo "mpirun_tcp=$(set_mpirun tcp N; echo "${MPIRUN[*]}")"
        echo "command=$COMMAND_LINE"
    } >"$OUT/meta.txt"
}

# Tables, plots and the printed summary from $OUT's raw.csv and probes.csv.
report() {
    summarize
    write_tables >"$OUT/summary.txt"
    write_overview >"$OUT/overview.txt"
    plot_all
    echo "limits (GB/s, best of before/after; copy,add,tcp,tcp_all_cores,cores):" \
        "$(tail -1 "$OUT/limits.csv")"
    echo "load average (1,5,15 min): $(tail -n +2 "$OUT/load.csv" | tr '\n' ' ')"
    cat "$OUT/overview.txt" "$OUT/summary.txt"
}

main() {
    COMMAND_LINE="$0 $*"
    parse_args "$@"
    if [[ -n ${SUMMARIZE_ONLY:-} ]]; then
        OUT=$SUMMARIZE_ONLY
        [[ -s $OUT/raw.csv && -s $OUT/probes.csv ]] || die "$OUT has no raw.csv/probes.csv"
        report
        return 0
    fi
    set_defaults
    install_deps
    [[ ${COMPARE_DEPS_ONLY:-0} == 1 ]] && return 0
    build
    mkdir -p "$OUT/logs" || die "cannot create $OUT"
    OMPI_TMP=$(mktemp -d "${TMPDIR:-/tmp}/anyccl-compare.XXXXXX") || die "mktemp failed"
    trap 'rm -rf "$OMPI_TMP"' EXIT
    make_tiers
    write_meta
    log "results in $OUT; limits first"
    echo "when,what,best_GBps,median_GBps" >"$OUT/probes.csv"
    echo "when,load1,load5,load15" >"$OUT/load.csv"
    probe_limits before
    run_all
    probe_limits after
    report
    [[ -s $OUT/failures.csv ]] && log "some runs failed: see $OUT/failures.csv"
    log "done: $OUT (summary.csv, summary.txt, overview.txt, plots/)"
}

main "$@"
