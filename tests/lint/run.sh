#!/usr/bin/env bash
# Source lint (the test protocol: one "PASS|FAIL|SKIP <name>" line per check, exit 1 on any FAIL).
#  - getenv-only-in-config: every environment variable is a row of the table in
#    src/common/config.c; no other file under src/ or tools/ calls getenv (or secure_getenv).
set -u
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT" || exit 1

failed=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; failed=1; }

check_getenv() {
    local hits
    hits=$(grep -rnE 'getenv[[:space:]]*\(' src tools --include='*.c' --include='*.h' \
        --include='*.cc' --include='*.cpp' --include='*.cu' 2>/dev/null |
        grep -v '^src/common/config\.c:')
    if [ -z "$hits" ]; then
        pass getenv-only-in-config
    else
        fail getenv-only-in-config "$(echo "$hits" | head -3 | tr '\n' ' ')- add a row to the table in src/common/config.c and read it with ac_config_get()"
    fi
}

check_getenv
exit $failed
