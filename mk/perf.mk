# Perf binaries (owned by perf/): they use only the public API and link the shared library, as a
# user's program would. PERFS must list every binary; `make perf` builds them.
PERFS :=
perf:
