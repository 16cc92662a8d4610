# Fuzzing (issue 6): libFuzzer targets for every parser of outside bytes, under tests/fuzz/.
#   make fuzz [FUZZ_SECONDS=60] [FUZZ_TARGETS="ras_wire ..."]   clang: builds the library and the
#       targets with -fsanitize=fuzzer,address,undefined into $(FUZZ_BUILD) and runs each target
#       for FUZZ_SECONDS from its seeds (tests/fuzz/corpus/<t>) and past crashes
#       (tests/fuzz/crashes/<t>);
#       new crashing inputs land in $(FUZZ_BUILD)/crashes/<t>/ (copy them to tests/fuzz/crashes/<t>/
#       once fixed). See docs/fuzzing.md.
#   make fuzz-build                       the same binaries without running them
# `make test` builds each target with replay.c's main() instead (this compiler, SAN_FLAGS under
# `make asan`) and tests/fuzz/run.sh replays every seed and crash file through it.

FUZZ_TARGETS ?= $(patsubst tests/fuzz/fuzz_%.c,%,$(sort $(wildcard tests/fuzz/fuzz_*.c)))
FUZZ_SECONDS ?= 60
FUZZ_CC ?= clang
FUZZ_BUILD ?= $(BUILD)/fuzz-clang
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=gnu11 -O1 -g -fPIC -pthread $(FUZZ_SAN) -fsanitize=fuzzer-no-link
FUZZ_LIB_OBJS := $(LIB_SRCS:%.c=$(FUZZ_BUILD)/obj/%.o)
FUZZ_LIB_A := $(FUZZ_BUILD)/libanyccl_fuzz.a
FUZZ_BINS := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)
FUZZ_REPLAY_DIR := $(BUILD)/tests/fuzz
FUZZ_REPLAY_BINS := $(patsubst tests/fuzz/fuzz_%.c,$(FUZZ_REPLAY_DIR)/replay_%,\
	$(sort $(wildcard tests/fuzz/fuzz_*.c)))

# Replay builds (part of test-build): the same target source, replay.c's main, the library archive.
$(FUZZ_REPLAY_DIR)/replay_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c tests/fuzz/fuzz.h $(LIB_A)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZREP $@")
	$(Q)$(CC) $(CPPFLAGS_ALL) -Itests/fuzz $(CFLAGS_ALL) -o $@ $< tests/fuzz/replay.c $(LIB_A) \
		$(LDFLAGS_ALL) $(LIBS)

test-build: $(FUZZ_REPLAY_BINS)

# libFuzzer builds. No -Werror: the warnings of clang are not this build's business (gcc's
# -Werror build guards the code).
$(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZCC  $<")
	$(Q)$(FUZZ_CC) $(CPPFLAGS_ALL) $(FUZZ_CFLAGS) -w -MMD -MP -c $< -o $@

# The embedded-kernel stubs too: entry points reach the device backends (pointer classification).
$(FUZZ_LIB_A): $(FUZZ_LIB_OBJS) $(DEVICE_DIR)/cuda_fatbin.o $(DEVICE_DIR)/hip_code.o
	$(Q)rm -f $@ && ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZ_LIB_A)
	@$(if $(Q),echo "  FUZZLD  $@")
	$(Q)$(FUZZ_CC) $(CPPFLAGS_ALL) -Itests/fuzz -std=gnu11 -O1 -g -pthread $(FUZZ_SAN) \
		-fsanitize=fuzzer -o $@ $< $(FUZZ_LIB_A) $(LIBS)

.PHONY: fuzz fuzz-build
fuzz-build:
	@command -v $(FUZZ_CC) >/dev/null || \
		{ echo "fuzz: $(FUZZ_CC) not found (scripts/install-deps.sh installs it)"; exit 1; }
	$(Q)$(MAKE) --no-print-directory $(FUZZ_BINS)

fuzz: fuzz-build
	$(Q)FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/fuzz.sh $(FUZZ_TARGETS)

-include $(FUZZ_LIB_OBJS:.o=.d)
