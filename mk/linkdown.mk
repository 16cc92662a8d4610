# The link-down test program (tests/multinode/linkdown.sh, issue 6), built with the multi-node
# suite's other programs; tests/multinode/run.sh runs the script.
LD_BIN := $(BUILD)/tests/multinode/linkdown

$(LD_BIN): tests/multinode/linkdown.c $(LIB_SO) $(LIB_LINKS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  MNTEST  $@")
	$(Q)$(CC) -Iinclude -D_GNU_SOURCE -std=gnu11 $(OPT) -g $(WARN) $(SAN_FLAGS) -pthread \
		-o $@ $< -L$(BUILD)/lib -lanyccl -Wl,-rpath,'$$ORIGIN/../../lib' $(LDFLAGS_ALL)

test-build: $(LD_BIN)
