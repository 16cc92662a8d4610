# `make bench`: the main job. Installs missing packages, builds, then runs the allreduce benchmark
# on 4 ranks: 4 processes under mpirun when it exists, else 4 threads of one process (-t 4).
# BENCH_ARGS and BENCH_NP override the defaults.

BENCH_NP ?= 4
BENCH_ARGS ?= -b 8 -e 64M -f 4 -c 1
BENCH_MPIRUN := $(shell command -v mpirun 2>/dev/null)

.PHONY: bench
bench: deps
	$(Q)$(MAKE) --no-print-directory all
ifneq ($(BENCH_MPIRUN),)
	$(BENCH_MPIRUN) --allow-run-as-root --oversubscribe -np $(BENCH_NP) \
		$(BUILD)/bin/all_reduce_perf $(BENCH_ARGS)
else
	@echo "bench: mpirun not found: running $(BENCH_NP) ranks as threads of one process"
	$(BUILD)/bin/all_reduce_perf $(BENCH_ARGS) -t $(BENCH_NP)
endif
