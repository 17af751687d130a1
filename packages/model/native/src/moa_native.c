// moa native kernels: float32 CPU kernels for the tfjs "native" backend.
//
// Every function reads and writes the Float32Arrays that live in the JS heap (zero copy: N-API
// hands us the backing store pointer) and allocates nothing. Matrix products go through OpenBLAS
// (cblas_sgemm); the rest are plain loops that gcc vectorises (-O3 -march=native), threaded
// with OpenMP over the two cores when the tensor is big enough to pay for the wake-up.
#define NAPI_VERSION 8
#include <node_api.h>
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

// OpenBLAS thread control (present in every OpenBLAS build).
extern void openblas_set_num_threads(int);
extern char* openblas_get_config(void);

static int g_threads = 1;
static int g_blas_threads = -1;  // what OpenBLAS is currently set to
// Products below this many FLOPs run on one thread: a parallel region on a busy machine can wait
// a whole scheduler slice for its second thread, which costs more than the product itself.
#define GEMM_PAR_MIN_FLOPS 16e6

static void blas_threads(int n) {
  if (n != g_blas_threads) {
    openblas_set_num_threads(n);
    g_blas_threads = n;
  }
}
// Below this many elements a loop runs on one thread: elementwise loops are memory-bound, and an
// OpenMP region on a busy 2-core machine can wait a whole scheduler slice for its second thread.
#define PAR_MIN (1 << 20)

// ---------------------------------------------------------------------------------------------
// N-API helpers
// ---------------------------------------------------------------------------------------------
#define CHECK(call)                                                         \
  do {                                                                      \
    if ((call) != napi_ok) {                                                \
      napi_throw_error(env, NULL, "moa_native: N-API call failed: " #call); \
      return NULL;                                                          \
    }                                                                       \
  } while (0)

static int get_f32(napi_env env, napi_value v, float** out, size_t* len) {
  napi_typedarray_type t;
  size_t n;
  void* data;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &t, &n, &data, &ab, &off) != napi_ok || t != napi_float32_array) {
    napi_throw_type_error(env, NULL, "moa_native: expected a Float32Array");
    return 0;
  }
  *out = (float*)data;
  if (len) *len = n;
  return 1;
}

static int get_i32arr(napi_env env, napi_value v, int32_t** out, size_t* len) {
  napi_typedarray_type t;
  size_t n;
  void* data;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &t, &n, &data, &ab, &off) != napi_ok || t != napi_int32_array) {
    napi_throw_type_error(env, NULL, "moa_native: expected an Int32Array");
    return 0;
  }
  *out = (int32_t*)data;
  if (len) *len = n;
  return 1;
}

static int get_int(napi_env env, napi_value v, int64_t* out) {
  if (napi_get_value_int64(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "moa_native: expected an integer");
    return 0;
  }
  return 1;
}

static int get_double(napi_env env, napi_value v, double* out) {
  if (napi_get_value_double(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "moa_native: expected a number");
    return 0;
  }
  return 1;
}

#define ARGS(n)                                                        \
  size_t argc = n;                                                     \
  napi_value argv[n];                                                  \
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));         \
  if (argc < n) {                                                      \
    napi_throw_error(env, NULL, "moa_native: too few arguments");      \
    return NULL;                                                       \
  }

// ---------------------------------------------------------------------------------------------
// exp: Cephes-style range reduction + degree-6 polynomial, branch-free so gcc vectorises it.
// Max relative error ~2e-7 over the float range. NaN propagates; -inf -> 0; overflow -> inf.
// ---------------------------------------------------------------------------------------------
static inline float vexpf(float x) {
  const float hi = 88.3762626647949f, lo = -87.3365478515625f;
  float xc = x > hi ? hi : x;
  xc = xc < lo ? lo : xc;
  float n = floorf(xc * 1.44269504088896341f + 0.5f);
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500E-4f;
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  p = p * r * r + r + 1.0f;
  union { int32_t i; float f; } s;
  s.i = ((int32_t)n + 127) << 23;
  float y = p * s.f;
  y = x > hi ? INFINITY : y;
  y = x < lo ? 0.0f : y;
  return x != x ? x : y;
}

// ---------------------------------------------------------------------------------------------
// threads(n): set OpenMP + OpenBLAS threads; returns the config string of OpenBLAS.
// ---------------------------------------------------------------------------------------------
static napi_value js_set_threads(napi_env env, napi_callback_info info) {
  ARGS(1);
  int64_t n;
  if (!get_int(env, argv[0], &n)) return NULL;
  if (n < 1) n = 1;
  g_threads = (int)n;
#ifdef _OPENMP
  omp_set_num_threads(g_threads);
#endif
  blas_threads(g_threads);
  napi_value out;
  CHECK(napi_create_int32(env, g_threads, &out));
  return out;
}

static napi_value js_config(napi_env env, napi_callback_info info) {
  char buf[512];
#ifdef _OPENMP
  const char* omp = "openmp";
#else
  const char* omp = "no-openmp";
#endif
  snprintf(buf, sizeof buf, "%s; %s; threads=%d", openblas_get_config(), omp, g_threads);
  napi_value out;
  CHECK(napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &out));
  return out;
}

// ---------------------------------------------------------------------------------------------
// gemm(a, b, c, batch, M, N, K, transA, transB, strideA, strideB)
//   c[i] (M×N, row-major) = op(a[i]) · op(b[i]), a[i] = a + i*strideA (0 = broadcast).
//   op(a) is M×K (a stored K×M when transA), op(b) is K×N (b stored N×K when transB).
// One product: BLAS threads it. Many: OpenMP over the batch, BLAS single-threaded inside.
// ---------------------------------------------------------------------------------------------
static napi_value js_gemm(napi_env env, napi_callback_info info) {
  ARGS(11);
  float *a, *b, *c;
  int64_t batch, M, N, K, ta, tb, sa, sb;
  if (!get_f32(env, argv[0], &a, NULL) || !get_f32(env, argv[1], &b, NULL) || !get_f32(env, argv[2], &c, NULL))
    return NULL;
  if (!get_int(env, argv[3], &batch) || !get_int(env, argv[4], &M) || !get_int(env, argv[5], &N) ||
      !get_int(env, argv[6], &K) || !get_int(env, argv[7], &ta) || !get_int(env, argv[8], &tb) ||
      !get_int(env, argv[9], &sa) || !get_int(env, argv[10], &sb))
    return NULL;
  const enum CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans;
  const enum CBLAS_TRANSPOSE TB = tb ? CblasTrans : CblasNoTrans;
  const int lda = ta ? (int)M : (int)K;
  const int ldb = tb ? (int)K : (int)N;
  if (K == 0) {
    memset(c, 0, sizeof(float) * (size_t)(batch * M * N));
    return NULL;
  }
  const int par = g_threads > 1 && 2.0 * (double)batch * (double)M * (double)N * (double)K >= GEMM_PAR_MIN_FLOPS;
  if (batch == 1) {
    blas_threads(par ? g_threads : 1);
    cblas_sgemm(CblasRowMajor, TA, TB, (int)M, (int)N, (int)K, 1.0f, a, lda, b, ldb, 0.0f, c, (int)N);
  } else {
    blas_threads(1);
#pragma omp parallel for schedule(static) if (par)
    for (int64_t i = 0; i < batch; i++) {
      cblas_sgemm(CblasRowMajor, TA, TB, (int)M, (int)N, (int)K, 1.0f, a + i * sa, lda, b + i * sb, ldb, 0.0f,
                  c + i * M * N, (int)N);
    }
  }
  return NULL;
}

// ---------------------------------------------------------------------------------------------
// binary(op, a, b, out, meta): out = a (op) b with broadcasting.
//   meta (Int32Array) = [ndim, shape[0..ndim), aStrides[0..ndim), bStrides[0..ndim)], strides 0
//   on broadcast dims; ndim ≤ 6 after the caller merged adjacent dims.
// ops: 0 add, 1 sub, 2 mul, 3 div, 4 maximum, 5 minimum, 6 squared difference.
// ---------------------------------------------------------------------------------------------
#define BIN_INNER(EXPR)                                                                  \
  if (sa1 == 1 && sb1 == 1) {                                                           \
    _Pragma("omp simd") for (int64_t j = 0; j < n; j++) { float x = pa[j], y = pb[j]; po[j] = (EXPR); } \
  } else if (sa1 == 1 && sb1 == 0) {                                                    \
    const float y = pb[0];                                                              \
    _Pragma("omp simd") for (int64_t j = 0; j < n; j++) { float x = pa[j]; po[j] = (EXPR); } \
  } else if (sa1 == 0 && sb1 == 1) {                                                    \
    const float x = pa[0];                                                              \
    _Pragma("omp simd") for (int64_t j = 0; j < n; j++) { float y = pb[j]; po[j] = (EXPR); } \
  } else {                                                                              \
    for (int64_t j = 0; j < n; j++) { float x = pa[j * sa1], y = pb[j * sb1]; po[j] = (EXPR); } \
  }

static void bin_row(int op, const float* pa, const float* pb, float* po, int64_t n, int64_t sa1, int64_t sb1) {
  switch (op) {
    case 0: BIN_INNER(x + y) break;
    case 1: BIN_INNER(x - y) break;
    case 2: BIN_INNER(x * y) break;
    case 3: BIN_INNER(x / y) break;
    case 4: BIN_INNER(x > y || x != x ? x : y) break;
    case 5: BIN_INNER(x < y || x != x ? x : y) break;
    case 6: BIN_INNER((x - y) * (x - y)) break;
  }
}

static napi_value js_binary(napi_env env, napi_callback_info info) {
  ARGS(5);
  int64_t op;
  float *a, *b, *o;
  int32_t* meta;
  size_t ml;
  if (!get_int(env, argv[0], &op) || !get_f32(env, argv[1], &a, NULL) || !get_f32(env, argv[2], &b, NULL) ||
      !get_f32(env, argv[3], &o, NULL) || !get_i32arr(env, argv[4], &meta, &ml))
    return NULL;
  const int nd = meta[0];
  if (nd < 1 || nd > 6 || ml < (size_t)(1 + 3 * nd)) {
    napi_throw_range_error(env, NULL, "moa_native.binary: bad meta");
    return NULL;
  }
  int64_t shape[6], sa[6], sb[6];
  for (int d = 0; d < nd; d++) {
    shape[d] = meta[1 + d];
    sa[d] = meta[1 + nd + d];
    sb[d] = meta[1 + 2 * nd + d];
  }
  const int64_t inner = shape[nd - 1];
  int64_t rows = 1;
  for (int d = 0; d < nd - 1; d++) rows *= shape[d];
  const int64_t total = rows * inner;
  const int iop = (int)op;
  if (rows == 1) {
    // One long row: split it across threads.
    if (total >= PAR_MIN && g_threads > 1 && sa[nd - 1] <= 1 && sb[nd - 1] <= 1) {
      const int64_t chunk = (total + g_threads - 1) / g_threads;
#pragma omp parallel for schedule(static)
      for (int t = 0; t < g_threads; t++) {
        int64_t s = t * chunk, e = s + chunk < total ? s + chunk : total;
        if (s < e) bin_row(iop, a + s * sa[nd - 1], b + s * sb[nd - 1], o + s, e - s, sa[nd - 1], sb[nd - 1]);
      }
    } else {
      bin_row(iop, a, b, o, total, sa[nd - 1], sb[nd - 1]);
    }
    return NULL;
  }
#pragma omp parallel for schedule(static) if (total >= PAR_MIN && g_threads > 1)
  for (int64_t r = 0; r < rows; r++) {
    int64_t rem = r, offa = 0, offb = 0;
    for (int d = nd - 2; d >= 0; d--) {
      int64_t idx = rem % shape[d];
      rem /= shape[d];
      offa += idx * sa[d];
      offb += idx * sb[d];
    }
    bin_row(iop, a + offa, b + offb, o + r * inner, inner, sa[nd - 1], sb[nd - 1]);
  }
  return NULL;
}

// ---------------------------------------------------------------------------------------------
// unary(op, x, out, alpha)
// ops: 0 exp, 1 log, 2 sigmoid, 3 tanh, 4 neg, 5 sqrt, 6 rsqrt, 7 square, 8 reciprocal, 9 abs,
//      10 relu, 11 x*alpha (scale), 12 softplus
// ---------------------------------------------------------------------------------------------
static void un_range(int op, const float* x, float* y, int64_t n) {
  switch (op) {
    case 0: _Pragma("omp simd") for (int64_t i = 0; i < n; i++) y[i] = vexpf(x[i]); break;
    case 1: for (int64_t i = 0; i < n; i++) y[i] = logf(x[i]); break;
    case 2: _Pragma("omp simd") for (int64_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + vexpf(-x[i])); break;
    case 3: for (int64_t i = 0; i < n; i++) y[i] = tanhf(x[i]); break;
    case 4: _Pragma("omp simd") for (int64_t i = 0; i < n; i++) y[i] = -x[i]; break;
    case 5: _Pragma("omp simd") for (int64_t i = 0; i < n; i++) y[i] = sqrtf(x[i]); break;
    case 6: _Pragma("omp simd") for (int64_t i = 0; i < n; i++) y[i] = 1.0f / sqrtf(x[i]); break;
    case 7: _Pragma("omp simd") for (int64_t i = 0; i < n; i++) y[i] = x[i] * x[i]; break;
    case 8: _Pragma("omp simd") for (int64_t i = 0; i < n; i++) y[i] = 1.0f / x[i]; break;
    case 9: _Pragma("omp simd") for (int64_t i = 0; i < n; i++) y[i] = fabsf(x[i]); break;
    case 10: _Pragma("omp simd") for (int64_t i = 0; i < n; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i]; break;
    case 12: for (int64_t i = 0; i < n; i++) y[i] = log1pf(expf(-fabsf(x[i]))) + (x[i] > 0.0f ? x[i] : 0.0f); break;
  }
}

static napi_value js_unary(napi_env env, napi_callback_info info) {
  ARGS(3);
  int64_t op;
  float *x, *y;
  size_t n, ny;
  if (!get_int(env, argv[0], &op) || !get_f32(env, argv[1], &x, &n) || !get_f32(env, argv[2], &y, &ny)) return NULL;
  if (ny < n) n = ny;
  const int iop = (int)op;
  if ((int64_t)n >= PAR_MIN && g_threads > 1) {
    const int64_t chunk = ((int64_t)n + g_threads - 1) / g_threads;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < g_threads; t++) {
      int64_t s = t * chunk, e = s + chunk < (int64_t)n ? s + chunk : (int64_t)n;
      if (s < e) un_range(iop, x + s, y + s, e - s);
    }
  } else {
    un_range(iop, x, y, (int64_t)n);
  }
  return NULL;
}

// ---------------------------------------------------------------------------------------------
// softmax(x, out, rows, cols): softmax over the last axis, max-subtracted.
// ---------------------------------------------------------------------------------------------
static napi_value js_softmax(napi_env env, napi_callback_info info) {
  ARGS(4);
  float *x, *y;
  int64_t rows, cols;
  if (!get_f32(env, argv[0], &x, NULL) || !get_f32(env, argv[1], &y, NULL) || !get_int(env, argv[2], &rows) ||
      !get_int(env, argv[3], &cols))
    return NULL;
#pragma omp parallel for schedule(static) if (rows * cols >= PAR_MIN && g_threads > 1)
  for (int64_t r = 0; r < rows; r++) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    float m = -INFINITY;
    for (int64_t j = 0; j < cols; j++) m = xr[j] > m ? xr[j] : m;
    if (m == -INFINITY) m = 0.0f;  // a fully masked row: tfjs gives NaN-free 1/cols? keep exp(-inf)=0 -> 0/0
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < cols; j++) {
      float e = vexpf(xr[j] - m);
      yr[j] = e;
      s += e;
    }
    const float inv = 1.0f / s;
#pragma omp simd
    for (int64_t j = 0; j < cols; j++) yr[j] *= inv;
  }
  return NULL;
}

// ---------------------------------------------------------------------------------------------
// reduce(op, x, out, outer, mid, inner): x viewed as [outer, mid, inner], reduce over mid.
// ops: 0 sum, 1 mean, 2 max, 3 min. Sums accumulate in double-free float pairs (pairwise over
// the inner vector), matching the cpu backend to float rounding.
// ---------------------------------------------------------------------------------------------
static napi_value js_reduce(napi_env env, napi_callback_info info) {
  ARGS(6);
  int64_t op, outer, mid, inner;
  float *x, *y;
  if (!get_int(env, argv[0], &op) || !get_f32(env, argv[1], &x, NULL) || !get_f32(env, argv[2], &y, NULL) ||
      !get_int(env, argv[3], &outer) || !get_int(env, argv[4], &mid) || !get_int(env, argv[5], &inner))
    return NULL;
  const int64_t total = outer * mid * inner;
  if (inner == 1) {
#pragma omp parallel for schedule(static) if (total >= PAR_MIN && g_threads > 1)
    for (int64_t r = 0; r < outer; r++) {
      const float* xr = x + r * mid;
      float acc;
      if (op <= 1) {
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < mid; j++) s += xr[j];
        acc = op == 1 ? s / (float)mid : s;
      } else if (op == 2) {
        float m = xr[0];
        for (int64_t j = 1; j < mid; j++) m = xr[j] > m || xr[j] != xr[j] ? xr[j] : m;
        acc = m;
      } else {
        float m = xr[0];
        for (int64_t j = 1; j < mid; j++) m = xr[j] < m || xr[j] != xr[j] ? xr[j] : m;
        acc = m;
      }
      y[r] = acc;
    }
    return NULL;
  }
  // Reduce a middle/leading axis: accumulate whole rows of `inner` (vectorised), threads split
  // the inner columns when there is one outer block, else the outer blocks.
  const int split_inner = outer < g_threads && inner >= 64;
  const int nchunks = split_inner ? g_threads : 1;
  const int64_t cw = (inner + nchunks - 1) / nchunks;
#pragma omp parallel for collapse(2) schedule(static) if (total >= PAR_MIN && g_threads > 1)
  for (int64_t o = 0; o < outer; o++) {
    for (int c = 0; c < nchunks; c++) {
      const int64_t s = c * cw, e = s + cw < inner ? s + cw : inner;
      if (s >= e) continue;
      float* yo = y + o * inner;
      const float* xo = x + o * mid * inner;
      for (int64_t i = s; i < e; i++) yo[i] = xo[i];
      for (int64_t j = 1; j < mid; j++) {
        const float* xr = xo + j * inner;
        if (op <= 1) {
#pragma omp simd
          for (int64_t i = s; i < e; i++) yo[i] += xr[i];
        } else if (op == 2) {
          for (int64_t i = s; i < e; i++) yo[i] = xr[i] > yo[i] || xr[i] != xr[i] ? xr[i] : yo[i];
        } else {
          for (int64_t i = s; i < e; i++) yo[i] = xr[i] < yo[i] || xr[i] != xr[i] ? xr[i] : yo[i];
        }
      }
      if (op == 1) {
        const float inv = (float)mid;
        for (int64_t i = s; i < e; i++) yo[i] /= inv;
      }
    }
  }
  return NULL;
}

// ---------------------------------------------------------------------------------------------
// transpose(x, out, meta): meta = [ndim, outShape[0..ndim), inStrides[0..ndim)] where
// inStrides[d] is the input stride of the input axis that becomes output axis d.
// ---------------------------------------------------------------------------------------------
static napi_value js_transpose(napi_env env, napi_callback_info info) {
  ARGS(3);
  float *x, *y;
  int32_t* meta;
  size_t ml;
  if (!get_f32(env, argv[0], &x, NULL) || !get_f32(env, argv[1], &y, NULL) || !get_i32arr(env, argv[2], &meta, &ml))
    return NULL;
  const int nd = meta[0];
  if (nd < 1 || nd > 6 || ml < (size_t)(1 + 2 * nd)) {
    napi_throw_range_error(env, NULL, "moa_native.transpose: bad meta");
    return NULL;
  }
  int64_t shape[6], st[6];
  for (int d = 0; d < nd; d++) {
    shape[d] = meta[1 + d];
    st[d] = meta[1 + nd + d];
  }
  const int64_t inner = shape[nd - 1], sin = st[nd - 1];
  int64_t rows = 1;
  for (int d = 0; d < nd - 1; d++) rows *= shape[d];
  const int64_t total = rows * inner;
  if (nd == 2 && sin != 1) {
    // Plain 2-D transpose, blocked for the cache.
    const int64_t R = shape[0], C = shape[1];  // out is R×C, in is C×R (st[0] = 1, st[1] = R)
    const int64_t BS = 32;
#pragma omp parallel for schedule(static) if (total >= PAR_MIN && g_threads > 1)
    for (int64_t i0 = 0; i0 < R; i0 += BS)
      for (int64_t j0 = 0; j0 < C; j0 += BS) {
        const int64_t ie = i0 + BS < R ? i0 + BS : R, je = j0 + BS < C ? j0 + BS : C;
        for (int64_t i = i0; i < ie; i++)
          for (int64_t j = j0; j < je; j++) y[i * C + j] = x[j * st[1] + i * st[0]];
      }
    return NULL;
  }
#pragma omp parallel for schedule(static) if (total >= PAR_MIN && g_threads > 1)
  for (int64_t r = 0; r < rows; r++) {
    int64_t rem = r, off = 0;
    for (int d = nd - 2; d >= 0; d--) {
      int64_t idx = rem % shape[d];
      rem /= shape[d];
      off += idx * st[d];
    }
    float* yo = y + r * inner;
    const float* xi = x + off;
    if (sin == 1) {
      memcpy(yo, xi, sizeof(float) * (size_t)inner);
    } else {
      for (int64_t j = 0; j < inner; j++) yo[j] = xi[j * sin];
    }
  }
  return NULL;
}

// ---------------------------------------------------------------------------------------------
// adam(param, grad, m, v, lr, beta1, beta2, eps, weightDecay, bc1, bc2, gradScale): in-place
// AdamW step with g = gradScale·grad:
//   m = b1 m + (1-b1) g ; v = b2 v + (1-b2) g² ; p -= lr (m/bc1) / (sqrt(v/bc2) + eps) + lr wd p
// ---------------------------------------------------------------------------------------------
static napi_value js_adam(napi_env env, napi_callback_info info) {
  ARGS(12);
  float *p, *g, *m, *v;
  size_t n;
  double lr, b1, b2, eps, wd, bc1, bc2, gs;
  if (!get_f32(env, argv[0], &p, &n) || !get_f32(env, argv[1], &g, NULL) || !get_f32(env, argv[2], &m, NULL) ||
      !get_f32(env, argv[3], &v, NULL) || !get_double(env, argv[4], &lr) || !get_double(env, argv[5], &b1) ||
      !get_double(env, argv[6], &b2) || !get_double(env, argv[7], &eps) || !get_double(env, argv[8], &wd) ||
      !get_double(env, argv[9], &bc1) || !get_double(env, argv[10], &bc2) || !get_double(env, argv[11], &gs))
    return NULL;
  const float fgs = (float)gs;
  const float fb1 = (float)b1, fb2 = (float)b2, flr = (float)lr, feps = (float)eps, fwd = (float)(lr * wd);
  const float ib1 = 1.0f / (float)bc1, ib2 = 1.0f / (float)bc2;
  // chunks of a plain `omp simd` loop (an outlined `parallel for simd` body did not vectorise)
  const int64_t N = (int64_t)n;
  const int nt = N >= PAR_MIN && g_threads > 1 ? g_threads : 1;
  const int64_t chunk = (N + nt - 1) / nt;
#pragma omp parallel for schedule(static) if (nt > 1)
  for (int t = 0; t < nt; t++) {
    const int64_t s0 = t * chunk, e = s0 + chunk < N ? s0 + chunk : N;
    float *pp = p + s0, *mm = m + s0, *vv = v + s0;
    const float* gg = g + s0;
#pragma omp simd
    for (int64_t i = 0; i < e - s0; i++) {
      const float gi = gg[i] * fgs;
      const float mi = fb1 * mm[i] + (1.0f - fb1) * gi;
      const float vi = fb2 * vv[i] + (1.0f - fb2) * gi * gi;
      mm[i] = mi;
      vv[i] = vi;
      pp[i] = pp[i] - flr * (mi * ib1) / (sqrtf(vi * ib2) + feps) - fwd * pp[i];
    }
  }
  return NULL;
}


// ---------------------------------------------------------------------------------------------
// decode(slots, meta, tokens, kc, vc, hidden): the GPT's cached forward for new tokens, fused.
//
// For the T new tokens of all B rows together (B·T rows in every linear layer) and each layer:
//   h = norm(x); q,k,v = h·W{q,k,v} + b; RoPE(q,k); append k,v to the cache; causal attention of
//   each token t over the cache (keys pad_b ≤ j ≤ past + t); x += y·Wo + bo; h = norm(x);
//   x += gelu(h·Wfi + bfi)·Wfo + bfo,   gelu(u) = u·sigmoid(1.702u)
// then hidden[b, t] = norm_f(x). The lm head stays in tfjs (one matmul). Same maths as
// src/gpt.ts `hidden()` with a KVCache; products through OpenBLAS (sgemv for one row, sgemm for
// several), single-threaded: at these sizes a second thread costs more than it saves.
//
// slots (Array of Float32Array; an empty array = absent):
//   0 wte [V,C], 1 wpe [Tmax,C] (learned positions), 2 ln_f.weight [C], 3 ln_f.bias [C]
//   4 + 16·i: ln_1.w, ln_1.b, q.W [C,C], q.b, k.W, k.b, v.W, v.b, o.W, o.b, ln_2.w, ln_2.b,
//             fc_in.W [C,F], fc_in.b [F], fc_out.W [F,C], fc_out.b [C]
// meta (Int32Array): [B, T, C, nh, L, F, V, Tmax, norm (0 layernorm, 1 rmsnorm), rope (0/1),
//   past, pad[0..B)]
// tokens: Int32Array [B, T]. kc, vc: Float32Array [L, B, nh, Tmax, hs] (the cache, written at
// positions past..past+T-1). hidden: Float32Array [B, T, C] (out).
// ---------------------------------------------------------------------------------------------
#define DEC_SLOTS_PER_LAYER 16
#define DEC_EPS 1e-5f

static void dec_norm(const float* x, float* y, int64_t B, int64_t C, const float* w, const float* bias, int rms) {
  for (int64_t b = 0; b < B; b++) {
    const float* xr = x + b * C;
    float* yr = y + b * C;
    if (rms) {
      float ss = 0.0f;
      for (int64_t j = 0; j < C; j++) ss += xr[j] * xr[j];
      const float r = 1.0f / sqrtf(ss / (float)C + DEC_EPS);
      for (int64_t j = 0; j < C; j++) yr[j] = xr[j] * r * w[j];
    } else {
      float s = 0.0f;
      for (int64_t j = 0; j < C; j++) s += xr[j];
      const float mu = s / (float)C;
      float ss = 0.0f;
      for (int64_t j = 0; j < C; j++) {
        const float d = xr[j] - mu;
        ss += d * d;
      }
      const float r = 1.0f / sqrtf(ss / (float)C + DEC_EPS);
      for (int64_t j = 0; j < C; j++) yr[j] = (xr[j] - mu) * r * w[j] + (bias ? bias[j] : 0.0f);
    }
  }
}

// y[B,out] = x[B,in]·W[in,out] (+ bias); accumulate: y += instead of y =.
static void dec_linear(const float* x, int64_t B, int64_t in, int64_t out, const float* W, const float* bias, float* y,
                       int accumulate) {
  const float beta = accumulate ? 1.0f : 0.0f;
  if (B == 1)
    cblas_sgemv(CblasRowMajor, CblasTrans, (int)in, (int)out, 1.0f, W, (int)out, x, 1, beta, y, 1);
  else
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)B, (int)out, (int)in, 1.0f, x, (int)in, W, (int)out, beta,
                y, (int)out);
  if (bias)
    for (int64_t b = 0; b < B; b++)
      for (int64_t j = 0; j < out; j++) y[b * out + j] += bias[j];
}

// HF rotate-half RoPE on one head vector at position p: x·cos + rotate_half(x)·sin.
static void dec_rope(float* x, int64_t hs, int64_t p) {
  const int64_t h = hs / 2;
  for (int64_t i = 0; i < h; i++) {
    const double ang = (double)p * pow(10000.0, (-2.0 * (double)i) / (double)hs);
    const float c = (float)cos(ang), s = (float)sin(ang);
    const float a = x[i], b = x[i + h];
    x[i] = a * c - b * s;
    x[i + h] = b * c + a * s;
  }
}

static napi_value js_decode(napi_env env, napi_callback_info info) {
  ARGS(6);
  int32_t *meta, *tokens;
  size_t ml, tl, kcl, vcl, hl;
  float *kc, *vc, *hidden;
  if (!get_i32arr(env, argv[1], &meta, &ml) || !get_i32arr(env, argv[2], &tokens, &tl) ||
      !get_f32(env, argv[3], &kc, &kcl) || !get_f32(env, argv[4], &vc, &vcl) || !get_f32(env, argv[5], &hidden, &hl))
    return NULL;
  if (ml < 11) {
    napi_throw_range_error(env, NULL, "moa_native.decode: meta too short");
    return NULL;
  }
  const int64_t B = meta[0], T = meta[1], C = meta[2], nh = meta[3], L = meta[4], F = meta[5], V = meta[6],
                Tmax = meta[7], past = meta[10];
  const int rms = meta[8], rope = meta[9];
  if (B < 1 || T < 1 || C < 1 || nh < 1 || C % nh || L < 1 || F < 1 || V < 1 || past < 0 || past + T > Tmax ||
      ml < (size_t)(11 + B) || tl < (size_t)(B * T)) {
    napi_throw_range_error(env, NULL, "moa_native.decode: bad meta or tokens");
    return NULL;
  }
  const int64_t hs = C / nh;
  const size_t cacheLen = (size_t)(L * B * nh * Tmax * hs);
  if (kcl < cacheLen || vcl < cacheLen || hl < (size_t)(B * T * C)) {
    napi_throw_range_error(env, NULL, "moa_native.decode: cache or hidden buffer too small");
    return NULL;
  }
  const int32_t* pad = meta + 11;
  // Weights: fetch and check every slot's length.
  const int64_t nslots = 4 + DEC_SLOTS_PER_LAYER * L;
  float** w = (float**)calloc((size_t)nslots, sizeof(float*));
  if (!w) {
    napi_throw_error(env, NULL, "moa_native.decode: out of memory");
    return NULL;
  }
  napi_value result = NULL;
  float* scratch = NULL;
  for (int64_t i = 0; i < nslots; i++) {
    napi_value el;
    size_t n;
    if (napi_get_element(env, argv[0], (uint32_t)i, &el) != napi_ok || !get_f32(env, el, &w[i], &n)) goto done;
    size_t want;
    const int64_t k = i < 4 ? i : 4 + (i - 4) % DEC_SLOTS_PER_LAYER;
    const int64_t lk = i < 4 ? -1 : (i - 4) % DEC_SLOTS_PER_LAYER;
    if (k == 0) want = (size_t)(V * C);
    else if (k == 1) want = (size_t)(Tmax * C);
    else if (i < 4) want = (size_t)C;
    else if (lk == 2 || lk == 4 || lk == 6 || lk == 8) want = (size_t)(C * C);
    else if (lk == 12) want = (size_t)(C * F);
    else if (lk == 13) want = (size_t)F;
    else if (lk == 14) want = (size_t)(F * C);
    else want = (size_t)C;
    const int optional = i == 1 || i == 3 || (lk >= 0 && (lk % 2 == 1));
    if (n == 0 && optional) {
      w[i] = NULL;
      continue;
    }
    if (n != want) {
      char msg[160];
      snprintf(msg, sizeof msg, "moa_native.decode: weight slot %ld has %zu floats, expected %zu", (long)i, n, want);
      napi_throw_range_error(env, NULL, msg);
      goto done;
    }
  }
  if (rope == 0 && !w[1]) {
    napi_throw_range_error(env, NULL, "moa_native.decode: learned positions need wpe (slot 1)");
    goto done;
  }
  // scratch for all R = B·T new rows (row r = b·T + t): x, h, q, k, v, y [R·C] each, f [R·F], p [Tmax].
  // The linear layers run once over all R rows (sgemm; sgemv when R = 1), so a prompt's weights
  // are read once, not once per token; attention then goes token by token over the cache.
  {
    const int64_t R = B * T;
    scratch = (float*)malloc(sizeof(float) * (size_t)(6 * R * C + R * F + Tmax));
    if (!scratch) {
      napi_throw_error(env, NULL, "moa_native.decode: out of memory");
      goto done;
    }
    blas_threads(1);
    float *x = scratch, *h = x + R * C, *q = h + R * C, *k = q + R * C, *v = k + R * C, *y = v + R * C, *f = y + R * C,
          *pr = f + R * F;
    const float scale = 1.0f / sqrtf((float)hs);
    for (int64_t b = 0; b < B; b++)
      for (int64_t t = 0; t < T; t++) {
        const int64_t r = b * T + t, at = past + t;
        const int32_t tok = tokens[r];
        if (tok < 0 || tok >= V) {
          napi_throw_range_error(env, NULL, "moa_native.decode: token id out of range");
          goto done;
        }
        const int64_t pos = at - pad[b] > 0 ? at - pad[b] : 0;
        memcpy(x + r * C, w[0] + (int64_t)tok * C, sizeof(float) * (size_t)C);
        if (!rope)
          for (int64_t j = 0; j < C; j++) x[r * C + j] += w[1][pos * C + j];
      }
    for (int64_t l = 0; l < L; l++) {
      float** lw = w + 4 + DEC_SLOTS_PER_LAYER * l;
      dec_norm(x, h, R, C, lw[0], lw[1], rms);
      dec_linear(h, R, C, C, lw[2], lw[3], q, 0);
      dec_linear(h, R, C, C, lw[4], lw[5], k, 0);
      dec_linear(h, R, C, C, lw[6], lw[7], v, 0);
      // RoPE, then this layer's keys and values of all new tokens into the cache
      for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
          const int64_t r = b * T + t, at = past + t;
          const int64_t pos = at - pad[b] > 0 ? at - pad[b] : 0;
          for (int64_t hd = 0; hd < nh; hd++) {
            float* kh = k + r * C + hd * hs;
            if (rope) {
              dec_rope(q + r * C + hd * hs, hs, pos);
              dec_rope(kh, hs, pos);
            }
            const size_t base = (size_t)((((l * B + b) * nh + hd) * Tmax) * hs);
            memcpy(kc + base + at * hs, kh, sizeof(float) * (size_t)hs);
            memcpy(vc + base + at * hs, v + r * C + hd * hs, sizeof(float) * (size_t)hs);
          }
        }
      // attention of each new token over keys pad_b..at of its row
      for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
          const int64_t r = b * T + t, at = past + t;
          const int64_t j0 = pad[b] < at ? pad[b] : at;
          for (int64_t hd = 0; hd < nh; hd++) {
            const float* qh = q + r * C + hd * hs;
            const size_t base = (size_t)((((l * B + b) * nh + hd) * Tmax) * hs);
            float m = -INFINITY;
            for (int64_t j = j0; j <= at; j++) {
              const float* kj = kc + base + j * hs;
              float sd = 0.0f;
              for (int64_t e = 0; e < hs; e++) sd += qh[e] * kj[e];
              sd *= scale;
              pr[j] = sd;
              m = sd > m ? sd : m;
            }
            float sum = 0.0f;
            for (int64_t j = j0; j <= at; j++) {
              pr[j] = vexpf(pr[j] - m);
              sum += pr[j];
            }
            const float inv = 1.0f / sum;
            float* yh = y + r * C + hd * hs;
            for (int64_t e = 0; e < hs; e++) yh[e] = 0.0f;
            for (int64_t j = j0; j <= at; j++) {
              const float pj = pr[j] * inv;
              const float* vj = vc + base + j * hs;
              for (int64_t e = 0; e < hs; e++) yh[e] += pj * vj[e];
            }
          }
        }
      dec_linear(y, R, C, C, lw[8], lw[9], x, 1);  // x += y·Wo + bo
      dec_norm(x, h, R, C, lw[10], lw[11], rms);
      dec_linear(h, R, C, F, lw[12], lw[13], f, 0);
      for (int64_t e = 0; e < R * F; e++) f[e] = f[e] / (1.0f + vexpf(-1.702f * f[e]));
      dec_linear(f, R, F, C, lw[14], lw[15], x, 1);  // x += gelu(·)·Wfo + bfo
    }
    dec_norm(x, hidden, R, C, w[2], w[3], rms);
  }
done:
  free(scratch);
  free(w);
  return result;
}

// ---------------------------------------------------------------------------------------------
// Fused training kernels (forward and backward of the model's GELU, LayerNorm/RMSNorm and causal
// softmax): one pass each instead of 3–15 tfjs kernels, each writing a full-size temporary.
// ---------------------------------------------------------------------------------------------
#define GELU_K 1.702f

// gelu(x, y): y = x·sigmoid(1.702x); gelu_grad(x, dy, dx): dx = dy·(s + 1.702·x·s·(1−s)),
// s = sigmoid(1.702x). Range functions with `omp simd` loops (as in unary: an outlined
// `parallel for simd` body did not vectorise), split over threads only above PAR_MIN.
static void gelu_range(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + vexpf(-GELU_K * x[i]));
}

static void gelu_grad_range(const float* x, const float* dy, float* dx, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) {
    const float s = 1.0f / (1.0f + vexpf(-GELU_K * x[i]));
    dx[i] = dy[i] * (s + GELU_K * x[i] * s * (1.0f - s));
  }
}

static napi_value js_gelu(napi_env env, napi_callback_info info) {
  ARGS(2);
  float *x, *y;
  size_t n, ny;
  if (!get_f32(env, argv[0], &x, &n) || !get_f32(env, argv[1], &y, &ny)) return NULL;
  if (ny < n) n = ny;
  if ((int64_t)n >= PAR_MIN && g_threads > 1) {
    const int64_t chunk = ((int64_t)n + g_threads - 1) / g_threads;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < g_threads; t++) {
      int64_t s0 = t * chunk, e = s0 + chunk < (int64_t)n ? s0 + chunk : (int64_t)n;
      if (s0 < e) gelu_range(x + s0, y + s0, e - s0);
    }
  } else {
    gelu_range(x, y, (int64_t)n);
  }
  return NULL;
}

static napi_value js_gelu_grad(napi_env env, napi_callback_info info) {
  ARGS(3);
  float *x, *dy, *dx;
  size_t n;
  if (!get_f32(env, argv[0], &x, &n) || !get_f32(env, argv[1], &dy, NULL) || !get_f32(env, argv[2], &dx, NULL)) return NULL;
  if ((int64_t)n >= PAR_MIN && g_threads > 1) {
    const int64_t chunk = ((int64_t)n + g_threads - 1) / g_threads;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < g_threads; t++) {
      int64_t s0 = t * chunk, e = s0 + chunk < (int64_t)n ? s0 + chunk : (int64_t)n;
      if (s0 < e) gelu_grad_range(x + s0, dy + s0, dx + s0, e - s0);
    }
  } else {
    gelu_grad_range(x, dy, dx, (int64_t)n);
  }
  return NULL;
}

// layernorm(x, w, b, y, mean, rstd, rows, C, rms): per row, LayerNorm (x−μ)·rstd·w + b with
// rstd = 1/√(var + 1e-5), or RMSNorm x·rstd·w with rstd = 1/√(mean(x²) + 1e-5) (μ = 0, b empty).
static napi_value js_layernorm(napi_env env, napi_callback_info info) {
  ARGS(9);
  float *x, *w, *b, *y, *mean, *rstd;
  size_t nb;
  int64_t rows, C, rms;
  if (!get_f32(env, argv[0], &x, NULL) || !get_f32(env, argv[1], &w, NULL) || !get_f32(env, argv[2], &b, &nb) ||
      !get_f32(env, argv[3], &y, NULL) || !get_f32(env, argv[4], &mean, NULL) || !get_f32(env, argv[5], &rstd, NULL) ||
      !get_int(env, argv[6], &rows) || !get_int(env, argv[7], &C) || !get_int(env, argv[8], &rms))
    return NULL;
  const int hasb = nb > 0;
#pragma omp parallel for schedule(static) if (rows * C >= PAR_MIN && g_threads > 1)
  for (int64_t r = 0; r < rows; r++) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    float mu = 0.0f;
    if (!rms) {
      float s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (int64_t j = 0; j < C; j++) s += xr[j];
      mu = s / (float)C;
    }
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t j = 0; j < C; j++) ss += (xr[j] - mu) * (xr[j] - mu);
    const float rs = 1.0f / sqrtf(ss / (float)C + 1e-5f);
    mean[r] = mu;
    rstd[r] = rs;
    if (hasb) {
#pragma omp simd
      for (int64_t j = 0; j < C; j++) yr[j] = (xr[j] - mu) * rs * w[j] + b[j];
    } else {
#pragma omp simd
      for (int64_t j = 0; j < C; j++) yr[j] = (xr[j] - mu) * rs * w[j];
    }
  }
  return NULL;
}

// layernorm_grad(x, w, mean, rstd, dy, dx, dw, db, rows, C, rms):
//   x̂ = (x−μ)·rstd, g = dy·w; dx = rstd·(g − mean(g) − x̂·mean(g·x̂))  (RMSNorm: no mean(g) term)
//   dw = Σ_rows dy·x̂, db = Σ_rows dy (db empty for RMSNorm)
static napi_value js_layernorm_grad(napi_env env, napi_callback_info info) {
  ARGS(11);
  float *x, *w, *mean, *rstd, *dy, *dx, *dw, *db;
  size_t ndb;
  int64_t rows, C, rms;
  if (!get_f32(env, argv[0], &x, NULL) || !get_f32(env, argv[1], &w, NULL) || !get_f32(env, argv[2], &mean, NULL) ||
      !get_f32(env, argv[3], &rstd, NULL) || !get_f32(env, argv[4], &dy, NULL) || !get_f32(env, argv[5], &dx, NULL) ||
      !get_f32(env, argv[6], &dw, NULL) || !get_f32(env, argv[7], &db, &ndb) || !get_int(env, argv[8], &rows) ||
      !get_int(env, argv[9], &C) || !get_int(env, argv[10], &rms))
    return NULL;
  const int hasb = ndb > 0;
  memset(dw, 0, sizeof(float) * (size_t)C);
  if (hasb) memset(db, 0, sizeof(float) * (size_t)C);
  for (int64_t r = 0; r < rows; r++) {
    const float* xr = x + r * C;
    const float* dyr = dy + r * C;
    float* dxr = dx + r * C;
    const float mu = mean[r], rs = rstd[r];
    float sg = 0.0f, sgx = 0.0f;
#pragma omp simd reduction(+ : sg, sgx)
    for (int64_t j = 0; j < C; j++) {
      const float xh = (xr[j] - mu) * rs, g = dyr[j] * w[j];
      sg += g;
      sgx += g * xh;
    }
    const float mg = rms ? 0.0f : sg / (float)C, mgx = sgx / (float)C;
#pragma omp simd
    for (int64_t j = 0; j < C; j++) {
      const float xh = (xr[j] - mu) * rs;
      dxr[j] = rs * (dyr[j] * w[j] - mg - xh * mgx);
      dw[j] += dyr[j] * xh;
    }
    if (hasb) {
#pragma omp simd
      for (int64_t j = 0; j < C; j++) db[j] += dyr[j];
    }
  }
  return NULL;
}

// causal_softmax(x, y, rows, cols, T, scale, causal): y = softmax(scale·x) over the last axis,
// where row r is query i = r mod T and (causal) keys j > i get probability 0 — what adding the
// model's −1e9 mask gives. Masked-out y are written as 0.
static napi_value js_causal_softmax(napi_env env, napi_callback_info info) {
  ARGS(7);
  float *x, *y;
  int64_t rows, cols, T, causal;
  double scale;
  if (!get_f32(env, argv[0], &x, NULL) || !get_f32(env, argv[1], &y, NULL) || !get_int(env, argv[2], &rows) ||
      !get_int(env, argv[3], &cols) || !get_int(env, argv[4], &T) || !get_double(env, argv[5], &scale) ||
      !get_int(env, argv[6], &causal))
    return NULL;
  const float sc = (float)scale;
#pragma omp parallel for schedule(static) if (rows * cols >= PAR_MIN && g_threads > 1)
  for (int64_t r = 0; r < rows; r++) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    const int64_t n = causal ? (r % T) + 1 - T + cols : cols;  // keys 0..n-1 are visible
    float m = -INFINITY;
    for (int64_t j = 0; j < n; j++) m = xr[j] * sc > m ? xr[j] * sc : m;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; j++) {
      const float e = vexpf(xr[j] * sc - m);
      yr[j] = e;
      s += e;
    }
    const float inv = 1.0f / s;
#pragma omp simd
    for (int64_t j = 0; j < n; j++) yr[j] *= inv;
    for (int64_t j = n; j < cols; j++) yr[j] = 0.0f;
  }
  return NULL;
}

// softmax_grad(y, dy, dx, rows, cols, scale): dx = scale·y·(dy − Σ_j dy_j·y_j)
static napi_value js_softmax_grad(napi_env env, napi_callback_info info) {
  ARGS(6);
  float *y, *dy, *dx;
  int64_t rows, cols;
  double scale;
  if (!get_f32(env, argv[0], &y, NULL) || !get_f32(env, argv[1], &dy, NULL) || !get_f32(env, argv[2], &dx, NULL) ||
      !get_int(env, argv[3], &rows) || !get_int(env, argv[4], &cols) || !get_double(env, argv[5], &scale))
    return NULL;
  const float sc = (float)scale;
#pragma omp parallel for schedule(static) if (rows * cols >= PAR_MIN && g_threads > 1)
  for (int64_t r = 0; r < rows; r++) {
    const float* yr = y + r * cols;
    const float* dyr = dy + r * cols;
    float* dxr = dx + r * cols;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < cols; j++) s += dyr[j] * yr[j];
#pragma omp simd
    for (int64_t j = 0; j < cols; j++) dxr[j] = sc * yr[j] * (dyr[j] - s);
  }
  return NULL;
}

// ---------------------------------------------------------------------------------------------
// attention(q, k, v, y, p, B, T, nh, scale): causal self-attention straight from the (B·T, C)
// projections, C = nh·hs — no head transposes: each (batch, head) is a strided block (ld C).
//   S = scale·Q Kᵀ with keys j > i masked → P = softmax(S) (saved, [B, nh, T, T]) → Y = P V.
// attention_grad(q, k, v, p, dy, dq, dk, dv, B, T, nh, scale):
//   dP = dY Vᵀ, dV = Pᵀ dY, dS = scale·P∘(dP − rowsum(dP∘P)), dQ = dS K, dK = dSᵀ Q.
// OpenMP over the B·nh blocks (each writes its own columns of the outputs), BLAS single-threaded.
// ---------------------------------------------------------------------------------------------
static napi_value js_attention(napi_env env, napi_callback_info info) {
  ARGS(9);
  float *q, *k, *v, *y, *p;
  size_t nq;
  int64_t B, T, nh;
  double scale;
  if (!get_f32(env, argv[0], &q, &nq) || !get_f32(env, argv[1], &k, NULL) || !get_f32(env, argv[2], &v, NULL) ||
      !get_f32(env, argv[3], &y, NULL) || !get_f32(env, argv[4], &p, NULL) || !get_int(env, argv[5], &B) ||
      !get_int(env, argv[6], &T) || !get_int(env, argv[7], &nh) || !get_double(env, argv[8], &scale))
    return NULL;
  if (B < 1 || T < 1 || nh < 1 || nq % (size_t)(B * T) || ((int64_t)nq / (B * T)) % nh) {
    napi_throw_range_error(env, NULL, "moa_native.attention: q is not (B·T, nh·hs)");
    return NULL;
  }
  const int64_t Cd = (int64_t)nq / (B * T), hs = Cd / nh;
  const float sc = (float)scale;
  const int par = g_threads > 1 && 4.0 * (double)B * (double)nh * (double)T * (double)T * (double)hs >= GEMM_PAR_MIN_FLOPS;
  blas_threads(1);
#pragma omp parallel for schedule(static) if (par)
  for (int64_t bh = 0; bh < B * nh; bh++) {
    const int64_t b = bh / nh, h = bh % nh;
    const float *Q = q + b * T * Cd + h * hs, *K = k + b * T * Cd + h * hs, *V = v + b * T * Cd + h * hs;
    float* P = p + bh * T * T;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, (int)hs, 1.0f, Q, (int)Cd, K, (int)Cd, 0.0f, P,
                (int)T);
    for (int64_t i = 0; i < T; i++) {
      float* r = P + i * T;
      float m = -INFINITY;
      for (int64_t j = 0; j <= i; j++) m = r[j] * sc > m ? r[j] * sc : m;
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j <= i; j++) {
        const float e = vexpf(r[j] * sc - m);
        r[j] = e;
        sum += e;
      }
      const float inv = 1.0f / sum;
#pragma omp simd
      for (int64_t j = 0; j <= i; j++) r[j] *= inv;
      for (int64_t j = i + 1; j < T; j++) r[j] = 0.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)hs, (int)T, 1.0f, P, (int)T, V, (int)Cd, 0.0f,
                y + b * T * Cd + h * hs, (int)Cd);
  }
  return NULL;
}

static napi_value js_attention_grad(napi_env env, napi_callback_info info) {
  ARGS(12);
  float *q, *k, *v, *p, *dy, *dq, *dk, *dv;
  size_t nq;
  int64_t B, T, nh;
  double scale;
  if (!get_f32(env, argv[0], &q, &nq) || !get_f32(env, argv[1], &k, NULL) || !get_f32(env, argv[2], &v, NULL) ||
      !get_f32(env, argv[3], &p, NULL) || !get_f32(env, argv[4], &dy, NULL) || !get_f32(env, argv[5], &dq, NULL) ||
      !get_f32(env, argv[6], &dk, NULL) || !get_f32(env, argv[7], &dv, NULL) || !get_int(env, argv[8], &B) ||
      !get_int(env, argv[9], &T) || !get_int(env, argv[10], &nh) || !get_double(env, argv[11], &scale))
    return NULL;
  if (B < 1 || T < 1 || nh < 1 || nq % (size_t)(B * T) || ((int64_t)nq / (B * T)) % nh) {
    napi_throw_range_error(env, NULL, "moa_native.attentionGrad: q is not (B·T, nh·hs)");
    return NULL;
  }
  const int64_t Cd = (int64_t)nq / (B * T), hs = Cd / nh;
  const float sc = (float)scale;
  const int par = g_threads > 1 && 8.0 * (double)B * (double)nh * (double)T * (double)T * (double)hs >= GEMM_PAR_MIN_FLOPS;
  float* scratch = (float*)malloc(sizeof(float) * (size_t)(T * T) * (size_t)(par ? g_threads : 1));
  if (!scratch) {
    napi_throw_error(env, NULL, "moa_native.attentionGrad: out of memory");
    return NULL;
  }
  blas_threads(1);
#pragma omp parallel for schedule(static) if (par)
  for (int64_t bh = 0; bh < B * nh; bh++) {
#ifdef _OPENMP
    float* dP = scratch + (size_t)(par ? omp_get_thread_num() : 0) * (size_t)(T * T);
#else
    float* dP = scratch;
#endif
    const int64_t b = bh / nh, h = bh % nh;
    const int64_t off = b * T * Cd + h * hs;
    const float* P = p + bh * T * T;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, (int)hs, 1.0f, dy + off, (int)Cd, v + off, (int)Cd,
                0.0f, dP, (int)T);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)T, (int)hs, (int)T, 1.0f, P, (int)T, dy + off, (int)Cd, 0.0f,
                dv + off, (int)Cd);
    for (int64_t i = 0; i < T; i++) {
      float* r = dP + i * T;
      const float* pr = P + i * T;
      float s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (int64_t j = 0; j < T; j++) s += r[j] * pr[j];
#pragma omp simd
      for (int64_t j = 0; j < T; j++) r[j] = sc * pr[j] * (r[j] - s);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)hs, (int)T, 1.0f, dP, (int)T, k + off, (int)Cd, 0.0f,
                dq + off, (int)Cd);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)T, (int)hs, (int)T, 1.0f, dP, (int)T, q + off, (int)Cd, 0.0f,
                dk + off, (int)Cd);
  }
  free(scratch);
  return NULL;
}

// ---------------------------------------------------------------------------------------------
// linear(x, w, b, y, N, K, M): y[N,M] = x[N,K]·w[K,M] + b[M] (b empty: no bias) — the bias rows
// are written first and sgemm accumulates onto them (beta = 1): one pass less than gemm + add.
// ---------------------------------------------------------------------------------------------
static napi_value js_linear(napi_env env, napi_callback_info info) {
  ARGS(7);
  float *x, *w, *b, *y;
  size_t nb;
  int64_t N, K, M;
  if (!get_f32(env, argv[0], &x, NULL) || !get_f32(env, argv[1], &w, NULL) || !get_f32(env, argv[2], &b, &nb) ||
      !get_f32(env, argv[3], &y, NULL) || !get_int(env, argv[4], &N) || !get_int(env, argv[5], &K) ||
      !get_int(env, argv[6], &M))
    return NULL;
  if (nb > 0 && nb != (size_t)M) {
    napi_throw_range_error(env, NULL, "moa_native.linear: bias length differs from the output width");
    return NULL;
  }
  if (nb > 0)
    for (int64_t r = 0; r < N; r++) memcpy(y + r * M, b, sizeof(float) * (size_t)M);
  if (K == 0) {
    if (nb == 0) memset(y, 0, sizeof(float) * (size_t)(N * M));
    return NULL;
  }
  const int par = g_threads > 1 && 2.0 * (double)N * (double)M * (double)K >= GEMM_PAR_MIN_FLOPS;
  blas_threads(par ? g_threads : 1);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)M, (int)K, 1.0f, x, (int)K, w, (int)M,
              nb > 0 ? 1.0f : 0.0f, y, (int)M);
  return NULL;
}

// ---------------------------------------------------------------------------------------------
static napi_value init(napi_env env, napi_value exports) {
  struct {
    const char* name;
    napi_callback cb;
  } fns[] = {
      {"setThreads", js_set_threads}, {"config", js_config},       {"gemm", js_gemm},
      {"binary", js_binary},          {"unary", js_unary},         {"softmax", js_softmax},
      {"reduce", js_reduce},          {"transpose", js_transpose}, {"adam", js_adam},
      {"decode", js_decode},          {"gelu", js_gelu},           {"geluGrad", js_gelu_grad},
      {"layerNorm", js_layernorm},    {"layerNormGrad", js_layernorm_grad},
      {"causalSoftmax", js_causal_softmax}, {"softmaxGrad", js_softmax_grad},
      {"attention", js_attention},    {"attentionGrad", js_attention_grad},
      {"linear", js_linear},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    CHECK(napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].cb, NULL, &f));
    CHECK(napi_set_named_property(env, exports, fns[i].name, f));
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
