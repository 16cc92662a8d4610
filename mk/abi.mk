# ABI checks (owned by tests/abi/): AnyCCL's header against NVIDIA's nccl.h and nccl_device.h when
# /usr/local/cuda/include has them (CUDA_INC=... to point elsewhere), C++ include order, and the
# shared library's exports, soname and NCCL/RCCL links. tests/run.sh runs the same script.
check-abi: lib
	$(Q)BUILD="$(BUILD)" CC="$(CC)" tests/abi/run.sh
