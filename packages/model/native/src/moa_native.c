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
#pragma omp parallel for simd schedule(static) if ((int64_t)n >= PAR_MIN && g_threads > 1)
  for (int64_t i = 0; i < (int64_t)n; i++) {
    const float gi = g[i] * fgs;
    const float mi = fb1 * m[i] + (1.0f - fb1) * gi;
    const float vi = fb2 * v[i] + (1.0f - fb2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] - flr * (mi * ib1) / (sqrtf(vi * ib2) + feps) - fwd * p[i];
  }
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
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    CHECK(napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].cb, NULL, &f));
    CHECK(napi_set_named_property(env, exports, fns[i].name, f));
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
