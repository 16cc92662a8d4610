# GPU-initiated networking (src/gin, src/device/kernels/gin.h): the test program of tests/gin is
# built by test-build. The library side needs nothing beyond the rest of the build.

GIN_TEST_DIR := $(BUILD)/tests/gin

$(GIN_TEST_DIR)/gin_a2a: tests/gin/gin_a2a.c $(LIB_SO) $(LIB_LINKS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  GINTEST $@")
	$(Q)$(CC) -Iinclude -D_GNU_SOURCE -std=gnu11 $(OPT) -g $(WARN) $(SAN_FLAGS) -pthread \
		-o $@ $< -L$(BUILD)/lib -lanyccl -Wl,-rpath,'$$ORIGIN/../../lib' $(LDFLAGS_ALL)

test-build: $(GIN_TEST_DIR)/gin_a2a

# One rank of the GIN runs on the multi-node bed (tests/multinode/gin.sh).
GIN_MN := $(BUILD)/tests/multinode/mn_gin

$(GIN_MN): tests/multinode/mn_gin.c $(LIB_SO) $(LIB_LINKS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  MNTEST  $@")
	$(Q)$(CC) -Iinclude -D_GNU_SOURCE -std=gnu11 $(OPT) -g $(WARN) $(SAN_FLAGS) -pthread \
		-o $@ $< -L$(BUILD)/lib -lanyccl -Wl,-rpath,'$$ORIGIN/../../lib' $(LDFLAGS_ALL)

test-build: $(GIN_MN)
multinode: $(GIN_MN)
