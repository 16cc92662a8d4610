# Test targets: unit (Criterion, one binary per file), integration (multi-process, public API).

UNIT_SRCS := $(sort $(shell find tests/unit -name 'test_*.c' 2>/dev/null))
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/unit/%,$(UNIT_SRCS))
TESTLIB_SRCS := $(wildcard tests/lib/*.c)
INTEG_SRCS := $(sort $(wildcard tests/integration/*.c))
INTEG_BINS := $(INTEG_SRCS:tests/integration/%.c=$(BUILD)/tests/integration/%)

$(BUILD)/tests/unit/%: tests/unit/%.c $(LIB_A)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  UNIT    $@")
	$(Q)$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -Wno-missing-field-initializers -o $@ $< $(LIB_A) \
		$(LDFLAGS_ALL) -lcriterion $(LIBS)

$(BUILD)/tests/integration/%: tests/integration/%.c $(TESTLIB_SRCS) $(wildcard tests/lib/*.h) $(LIB_SO) $(LIB_LINKS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  ITEST   $@")
	$(Q)$(CC) -Iinclude -Itests/lib -D_GNU_SOURCE -std=gnu11 $(OPT) -g $(WARN) $(SAN_FLAGS) -pthread -o $@ $< $(TESTLIB_SRCS) \
		-L$(BUILD)/lib -lanyccl -Wl,-rpath,'$$ORIGIN/../../lib' $(LDFLAGS_ALL) -lm

.PHONY: unit-tests integration-tests test-build
test-build: all $(UNIT_BINS) $(INTEG_BINS)

# ASAN_QUICK=1: integration cases marked slow are skipped (see .ci/run and tests/lib/launcher.h).
ASAN_QUICK ?= 0

test: deps
	$(Q)$(MAKE) --no-print-directory test-build
	$(Q)BUILD=$(BUILD) ASAN_QUICK=$(ASAN_QUICK) tests/run.sh

deps:
	$(Q)scripts/install-deps.sh

asan:
	$(Q)$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 ASAN_QUICK=$(ASAN_QUICK) \
		SAN_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" test
