# Perf binaries (owned by perf/): nccl-tests style benchmarks. They use only the public API and
# link the shared library, as a user's program would. PERFS lists every binary; `make perf`
# builds them. With mpicc on the PATH they are compiled and linked with it (-DAC_PERF_MPI) and
# run under mpirun; without it they run ranks as threads (-t) only.

PERF_NAMES := all_reduce_perf all_gather_perf reduce_scatter_perf broadcast_perf reduce_perf \
	alltoall_perf gather_perf scatter_perf sendrecv_perf
PERFS := $(PERF_NAMES:%=$(BUILD)/bin/%)
PERF_COMMON_SRCS := perf/common.c perf/bench.c perf/data.c
PERF_OBJDIR := $(BUILD)/perf-obj
PERF_COMMON_OBJS := $(PERF_COMMON_SRCS:perf/%.c=$(PERF_OBJDIR)/%.o)

PERF_MPICC := $(shell command -v mpicc 2>/dev/null)
ifneq ($(PERF_MPICC),)
PERF_CC := $(PERF_MPICC)
PERF_MPI_FLAGS := -DAC_PERF_MPI
PERF_MPI_STATE := with MPI ($(PERF_MPICC))
else
PERF_CC := $(CC)
PERF_MPI_FLAGS :=
PERF_MPI_STATE := without MPI (no mpicc: install openmpi-bin libopenmpi-dev for mpirun launches)
endif
ifneq ($(filter-out clean format format-check check-abi check-layers,$(if $(MAKECMDGOALS),$(MAKECMDGOALS),all)),)
$(info perf binaries: $(PERF_MPI_STATE))
endif

PERF_CFLAGS := -Iinclude -std=gnu11 $(OPT) -g -pthread $(WARN) $(SAN_FLAGS) $(PERF_MPI_FLAGS) $(CFLAGS)
# OMPI_CC=$(CC) keeps mpicc's wrapped compiler the one the rest of the build uses.
PERF_ENV := $(if $(PERF_MPICC),OMPI_CC=$(CC) MPICH_CC=$(CC))

$(PERF_OBJDIR)/%.o: perf/%.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  PERFCC  $<")
	$(Q)$(PERF_ENV) $(PERF_CC) $(PERF_CFLAGS) -MMD -MP -c $< -o $@

$(PERFS): $(BUILD)/bin/%: $(PERF_OBJDIR)/%.o $(PERF_COMMON_OBJS) $(LIB_SO) $(LIB_LINKS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  PERF    $@")
	$(Q)$(PERF_ENV) $(PERF_CC) -o $@ $< $(PERF_COMMON_OBJS) -L$(BUILD)/lib -lanyccl \
		-Wl,-rpath,'$$ORIGIN/../lib' $(LDFLAGS_ALL) -lm

perf: $(PERFS)

-include $(wildcard $(PERF_OBJDIR)/*.d)
