# AnyCCL build. `make` builds the library, tools and perf binaries into build/; `make test` installs
# missing Debian packages, builds and runs every suite. V=1 shows commands.
# Optional parts are reported at the start of the build, never dropped silently.

BUILD ?= build
PREFIX ?= /usr/local
CC ?= cc
V ?= 0
Q := $(if $(filter 1,$(V)),,@)

VERSION_MAJOR := 0
VERSION := 0.1.0

OPT ?= -O2
SAN_FLAGS ?=
WARN := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wstrict-prototypes
CPPFLAGS_ALL := -Iinclude -Isrc -D_GNU_SOURCE
CFLAGS_ALL := -std=gnu11 $(OPT) -g -fPIC -fvisibility=hidden -pthread $(WARN) $(SAN_FLAGS) $(CFLAGS)
LDFLAGS_ALL := -pthread $(SAN_FLAGS) $(LDFLAGS)
LIBS := -ldl -lrt -lm

LIB_SRCS := $(sort $(shell find src -name '*.c'))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
DEPS := $(LIB_OBJS:.o=.d)

SONAME := libanyccl.so.1
LIB_SO := $(BUILD)/lib/$(SONAME)
LIB_A := $(BUILD)/lib/libanyccl_internal.a
LIB_LINKS := $(BUILD)/lib/libanyccl.so $(BUILD)/lib/libnccl.so.2 $(BUILD)/lib/librccl.so.1

TOOL_SRCS := $(wildcard tools/*.c)
TOOLS := $(TOOL_SRCS:tools/%.c=$(BUILD)/bin/%)

.DEFAULT_GOAL := all
# mk/*.mk: perf binaries (perf.mk), tests (tests.mk), ABI checks (abi.mk), ...
include $(sort $(wildcard mk/*.mk))

.PHONY: all lib tools perf clean install test asan check-abi format format-check check-layers deps
all: lib tools perf

lib: $(LIB_SO) $(LIB_LINKS) $(LIB_A)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

$(LIB_A): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(LIB_SO): $(LIB_OBJS) mk/exports.map
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=mk/exports.map -Wl,--no-undefined \
		$(LDFLAGS_ALL) -o $@ $(LIB_OBJS) $(LIBS)

$(LIB_LINKS): $(LIB_SO)
	$(Q)ln -sf $(SONAME) $@

$(BUILD)/bin/%: tools/%.c $(LIB_A)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  TOOL    $@")
	$(Q)$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -o $@ $< $(LIB_A) $(LDFLAGS_ALL) $(LIBS)

tools: $(TOOLS)


install: all
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/bin
	install -m 644 include/anyccl.h include/nccl.h $(DESTDIR)$(PREFIX)/include/
	install -m 755 $(LIB_SO) $(DESTDIR)$(PREFIX)/lib/
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libanyccl.so
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libnccl.so.2
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/librccl.so.1
	install -m 755 $(TOOLS) $(PERFS) $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' pkgconfig/anyccl.pc.in \
		> $(DESTDIR)$(PREFIX)/lib/pkgconfig/anyccl.pc

clean:
	rm -rf build build-asan

-include $(DEPS)
