# The RDMA transports (issue 8): src/transport/rdma (engine), ib (verbs), ofi (libfabric). Both
# providers are compiled from the headers of libibverbs-dev / libfabric-dev when present (without
# them the transport reports "not built" at run time) and dlopen their library at run time.
# Test programs of tests/ofi (error injection) are built by test-build.

RDMA_HAS_HDR = $(shell printf '#include <$(1)>\n' | $(CC) -E -x c - >/dev/null 2>&1 && echo yes)
ifneq ($(filter-out clean format format-check check-abi check-layers,$(if $(MAKECMDGOALS),$(MAKECMDGOALS),all)),)
$(info rdma transports: verbs $(if $(call RDMA_HAS_HDR,infiniband/verbs.h),built (libibverbs.so.1 \
	opened at run time),not built (no infiniband/verbs.h: apt-get install libibverbs-dev)))
$(info rdma transports: libfabric $(if $(call RDMA_HAS_HDR,rdma/fabric.h),built (libfabric.so.1 \
	opened at run time),not built (no rdma/fabric.h: apt-get install libfabric-dev)))
endif

OFI_TEST_DIR := $(BUILD)/tests/ofi

$(OFI_TEST_DIR)/peer_kill: tests/ofi/peer_kill.c $(LIB_SO) $(LIB_LINKS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  OFITEST $@")
	$(Q)$(CC) -Iinclude -D_GNU_SOURCE -std=gnu11 $(OPT) -g $(WARN) $(SAN_FLAGS) -pthread \
		-o $@ $< -L$(BUILD)/lib -lanyccl -Wl,-rpath,'$$ORIGIN/../../lib' $(LDFLAGS_ALL)

test-build: $(OFI_TEST_DIR)/peer_kill
