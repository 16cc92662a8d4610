# Sourced by the suites' run.sh: free_port prints a TCP port that nothing on this machine holds
# now, below the kernel's ephemeral range. A port from that range (what binding port 0 gives) can
# be handed to any process's outgoing connection before the job's root listens on it, and a rank
# retrying its connect to the root can even be given the root's port as its own source.
free_port() {
    local lo=32768 hi port tries
    read -r lo hi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || lo=32768
    ((lo > 12000)) || lo=32768
    for ((tries = 0; tries < 50; tries++)); do
        port=$((10000 + (RANDOM * 32768 + RANDOM) % (lo - 10000)))
        if ! command -v ss >/dev/null || [[ -z $(ss -Htan "sport = :$port" 2>/dev/null) ]]; then
            echo "$port"
            return
        fi
    done
    echo "$port"
}
