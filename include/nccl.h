/* NCCL-compatible entry header: programs that include <nccl.h> get AnyCCL's declarations. */
#ifndef NCCL_H_
#define NCCL_H_
#include "anyccl.h"
#endif
