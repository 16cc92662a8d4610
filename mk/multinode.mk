# The multi-node test bed (tests/multinode, issue 4): K nodes as network namespaces with R rails
# each, one process per rank inside its node. `make test-multinode` builds the test program and the
# source-binding shim and runs tests/multinode/run.sh (root needed; otherwise it says SKIP).
# tests/run.sh runs the same script as part of `make test`.

MN_DIR := $(BUILD)/tests/multinode
MN_BINS := $(MN_DIR)/mn_colls $(MN_DIR)/bindsrc.so $(MN_DIR)/mn_perf
MN_TESTLIB := $(wildcard tests/lib/*.c)

$(MN_DIR)/mn_colls: tests/multinode/mn_colls.c $(MN_TESTLIB) $(wildcard tests/lib/*.h) \
		$(LIB_SO) $(LIB_LINKS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  MNTEST  $@")
	$(Q)$(CC) -Iinclude -Itests/lib -D_GNU_SOURCE -std=gnu11 $(OPT) -g $(WARN) $(SAN_FLAGS) -pthread \
		-o $@ $< $(MN_TESTLIB) -L$(BUILD)/lib -lanyccl -Wl,-rpath,'$$ORIGIN/../../lib' \
		$(LDFLAGS_ALL) -lm

$(MN_DIR)/mn_perf: tests/multinode/mn_perf.c $(LIB_SO) $(LIB_LINKS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  MNTEST  $@")
	$(Q)$(CC) -Iinclude -D_GNU_SOURCE -std=gnu11 $(OPT) -g $(WARN) $(SAN_FLAGS) -pthread \
		-o $@ $< -L$(BUILD)/lib -lanyccl -Wl,-rpath,'$$ORIGIN/../../lib' $(LDFLAGS_ALL)

# Preloaded into the test program: never sanitized (run.sh puts the sanitizer runtime first).
$(MN_DIR)/bindsrc.so: tests/multinode/bindsrc.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  MNSHIM  $@")
	$(Q)$(CC) -std=gnu11 $(OPT) -g $(WARN) -fPIC -shared -o $@ $< -ldl

.PHONY: multinode test-multinode
multinode: $(MN_BINS)
test-build: $(MN_BINS)

test-multinode: lib multinode
	$(Q)BUILD=$(BUILD) tests/multinode/run.sh
