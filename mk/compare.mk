# `make compare`: AnyCCL against Open MPI on this machine (perf/compare.sh, docs/performance.md).
# compare-tools builds the Open MPI benchmark (with mpicc) and the two machine probes into
# $(BUILD)/compare/. The script installs what is missing (Open MPI, gnuplot) before the build,
# so `compare` runs it once for that (COMPARE_DEPS_ONLY=1), builds, then runs the comparison.
# COMPARE_ARGS passes options (e.g. COMPARE_ARGS=--quick); QUICK=1, R=, FACTOR=, OUT= work too.

COMPARE_DIR := $(BUILD)/compare
COMPARE_TOOLS := $(COMPARE_DIR)/mpi_coll_bench $(COMPARE_DIR)/probe_mem $(COMPARE_DIR)/probe_tcp
COMPARE_ARGS ?=
COMPARE_CFLAGS := -std=gnu11 -D_GNU_SOURCE -g -pthread $(WARN) $(CFLAGS)
# The memory probe stands for the machine's limit: the best code this compiler makes for it.
COMPARE_NATIVE := $(shell $(CC) -march=native -E -x c /dev/null >/dev/null 2>&1 && \
	echo -march=native)

$(COMPARE_DIR)/mpi_coll_bench: perf/mpi_coll_bench.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  MPICC   $@")
	$(Q)command -v mpicc >/dev/null || { echo "compare: mpicc not found: install \
		openmpi-bin libopenmpi-dev (perf/compare.sh does)" >&2; exit 1; }
	$(Q)OMPI_CC=$(CC) mpicc $(COMPARE_CFLAGS) -O2 -o $@ $<

$(COMPARE_DIR)/probe_mem: perf/probe_mem.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(COMPARE_CFLAGS) -O3 $(COMPARE_NATIVE) -o $@ $<

$(COMPARE_DIR)/probe_tcp: perf/probe_tcp.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(COMPARE_CFLAGS) -O2 -o $@ $<

.PHONY: compare compare-tools
compare-tools: $(COMPARE_TOOLS)

# A library that does not build right now (others mid-edit) leaves the binaries already built.
compare:
	$(Q)COMPARE_DEPS_ONLY=1 perf/compare.sh
	$(Q)$(MAKE) --no-print-directory compare-tools
	$(Q)$(MAKE) --no-print-directory all || \
		echo "compare: make all failed: comparing the binaries already in $(BUILD)" >&2
	$(Q)COMPARE_NO_BUILD=1 BUILD=$(BUILD) perf/compare.sh $(COMPARE_ARGS)
