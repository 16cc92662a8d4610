# The drop-in proof (tests/dropin): a program compiled against NVIDIA's own nccl.h and linked
# against NVIDIA's libnccl.so.2 (no rpath: at run time AnyCCL is put in front of it), built only
# where the CUDA toolkit's NCCL is installed. tests/dropin/run.sh runs it (and builds it itself
# when this fragment was not used).

DROPIN_CUDA ?= /usr/local/cuda
DROPIN_BIN := $(BUILD)/tests/dropin/dropin
DROPIN_CFLAGS := -std=gnu11 $(OPT) -g $(WARN) -isystem $(DROPIN_CUDA)/include
DROPIN_LIBS := -L$(DROPIN_CUDA)/lib64 -lnccl -ldl -pthread

ifneq ($(wildcard $(DROPIN_CUDA)/include/nccl.h),)
ifneq ($(wildcard $(DROPIN_CUDA)/lib64/libnccl.so*),)
TEST_EXTRA_BINS += $(DROPIN_BIN)
endif
endif

# Not linked with SAN_FLAGS: it stands for a user's program; run.sh preloads the sanitizer
# runtime when the library under test needs it.
$(DROPIN_BIN): tests/dropin/dropin.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  DROPIN  $@")
	$(Q)$(CC) $(DROPIN_CFLAGS) -o $@ $< $(DROPIN_LIBS)

.PHONY: dropin
dropin: $(DROPIN_BIN)
test-build: $(TEST_EXTRA_BINS)
