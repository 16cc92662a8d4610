/* The element loop of the simple protocol on a GPU (CUDA and HIP): one step of a ring reads the
 * received chunk and the local input, reduces them with the element functions of ops.h (the very
 * ones the host backend runs) and stores the result to one or two places: the next peer's slot
 * and, on the steps that also produce output, the user's buffer. Semantics as reduce.h's
 * ac_kern_reduce / ac_kern_load: dst = a OP pre(b), then divided by postdiv. */
#ifndef AC_DEVICE_KERNELS_SIMPLE_CUH
#define AC_DEVICE_KERNELS_SIMPLE_CUH

#include "device/kernels/launch.h"
#include "device/kernels/ops.h"
#include "device/kernels/reduce.h"

/* The operators of one storage type as a class, so that one template serves every type. */
#define AC_DEV_OPS(t, T)                                                                           \
    struct ac_dev_ops_##t {                                                                        \
        typedef T type;                                                                            \
        static __device__ T prod(T a, T b) { return ac_op_prod_##t(a, b); }                        \
        static __device__ T div(T a, uint32_t n) { return ac_op_div_##t(a, n); }                   \
        static __device__ T apply(uint32_t kind, T a, T b)                                         \
        {                                                                                          \
            switch (kind) {                                                                        \
            case AC_OP_PROD:                                                                       \
                return ac_op_prod_##t(a, b);                                                       \
            case AC_OP_MAX:                                                                        \
                return ac_op_max_##t(a, b);                                                        \
            case AC_OP_MIN:                                                                        \
                return ac_op_min_##t(a, b);                                                        \
            default:                                                                               \
                return ac_op_sum_##t(a, b);                                                        \
            }                                                                                      \
        }                                                                                          \
    };

AC_DEV_OPS(i8, int8_t)
AC_DEV_OPS(u8, uint8_t)
AC_DEV_OPS(i32, int32_t)
AC_DEV_OPS(u32, uint32_t)
AC_DEV_OPS(i64, int64_t)
AC_DEV_OPS(u64, uint64_t)
AC_DEV_OPS(f16, uint16_t)
AC_DEV_OPS(f32, float)
AC_DEV_OPS(f64, double)
AC_DEV_OPS(bf16, uint16_t)
AC_DEV_OPS(e4m3, uint8_t)
AC_DEV_OPS(e5m2, uint8_t)

/* The branches depend only on the arguments, the same for every thread: no divergence. */
template <class O>
__device__ inline void ac_dev_simple_reduce(const struct ac_kreduce_args &g, uint64_t tid,
                                            uint64_t nthreads)
{
    typedef typename O::type T;
    const T *a = (const T *)g.a;
    const T *b = (const T *)g.b;
    T *d = (T *)g.dst;
    T *d2 = (T *)g.dst2;
    T s;

    memcpy(&s, &g.scalar, sizeof s); /* the low bytes: little-endian on every GPU */
    for (uint64_t i = tid; i < g.count; i += nthreads) {
        T x = b[i];
        if (g.has_premul)
            x = O::prod(x, s);
        if (a)
            x = O::apply(g.kind, a[i], x);
        if (g.postdiv > 1)
            x = O::div(x, g.postdiv);
        d[i] = x;
        if (d2)
            d2[i] = x;
    }
}

#endif
