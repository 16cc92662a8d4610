#!/usr/bin/env bash
# Documentation checks (the test protocol: one "PASS|FAIL|SKIP <name>" line per check, exit 1 on
# any FAIL).
#  - env-doc-up-to-date: docs/env.md is exactly what `anyccl-info --env-markdown` prints (the intro
#    and the table generated from src/common/config.c), so the documented variables, defaults
#    and meanings are the ones the library reads.
# Environment: BUILD (default build).
set -u
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT" || exit 1
BUILD=${BUILD:-build}
INFO=$BUILD/bin/anyccl-info
DOC=docs/env.md

failed=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; failed=1; }

check_env_doc() {
    local name=env-doc-up-to-date regen="regenerate with: $INFO --env-markdown > $DOC"
    if [ ! -x "$INFO" ]; then
        fail $name "$INFO is not built (run make tools)"
        return
    fi
    if [ ! -f "$DOC" ]; then
        fail $name "$DOC is missing; $regen"
        return
    fi
    local generated
    generated=$(mktemp) || { fail $name "mktemp failed"; return; }
    # A clean environment: the generated text must not depend on the caller's NCCL_* settings.
    if ! env -i PATH="$PATH" "$INFO" --env-markdown >"$generated" 2>/dev/null; then
        fail $name "$INFO --env-markdown failed"
    elif cmp -s "$generated" "$DOC"; then
        pass $name
    else
        local first
        first=$(diff "$DOC" "$generated" | grep -m1 '^[<>]' | cut -c1-120)
        fail $name "$DOC differs from the config table (first difference: $first); $regen"
    fi
    rm -f "$generated"
}

check_env_doc
exit $failed
