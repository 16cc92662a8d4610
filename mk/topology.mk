# Topology discovery (owned by src/topology/): hwloc for sockets, NUMA nodes and cores when
# pkg-config finds it (Debian: libhwloc-dev), else /sys parsing; either way the library builds and
# runs. TOPO_HWLOC=0 forces the /sys fallback.

TOPO_HWLOC ?= $(shell pkg-config --exists hwloc 2>/dev/null && echo 1 || echo 0)
ifeq ($(TOPO_HWLOC),1)
TOPO_HWLOC_CFLAGS := -DAC_HAVE_HWLOC $(shell pkg-config --cflags hwloc)
LIBS += $(shell pkg-config --libs hwloc)
TOPO_STATE := with hwloc $(shell pkg-config --modversion hwloc)
else
TOPO_HWLOC_CFLAGS :=
TOPO_STATE := without hwloc (/sys parsing; install libhwloc-dev for hwloc discovery)
endif
ifneq ($(filter-out clean format format-check check-abi check-layers,$(if $(MAKECMDGOALS),$(MAKECMDGOALS),all)),)
$(info topology discovery: $(TOPO_STATE))
endif

# Only the file that calls hwloc needs its flags.
$(BUILD)/obj/src/topology/topo_discover.o: CPPFLAGS_ALL += $(TOPO_HWLOC_CFLAGS)
