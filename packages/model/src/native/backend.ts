// The tfjs backend "native": the `cpu` backend (same Float32Arrays in the JS heap, same kernels
// for everything rare) with the kernels a transformer spends its time in replaced by calls into
// the addon, which reads and writes those arrays in place (no copies).
//
// Each replaced kernel handles the float32 cases it was written for and hands every other case
// (int32/bool dtypes, odd broadcasts, empty tensors) to the original `cpu` kernel, so the
// backend is always at least as complete as `cpu`. Pinned to tfjs 4.22.0: it reads the cpu
// backend's `data` map, which is internal API.
import * as tf from "@tensorflow/tfjs"
import { MathBackendCPU } from "@tensorflow/tfjs-backend-cpu"
import type { NativeAddon } from "./addon.js"

export const NATIVE_BACKEND = "native"
export const TFJS_VERSION = "4.22.0"

type TensorInfo = tf.TensorInfo
type KernelArgs = { inputs: Record<string, TensorInfo>; backend: NativeBackend; attrs?: Record<string, unknown> }
type KernelFn = (args: KernelArgs) => TensorInfo | TensorInfo[]

/** Arrays shorter than this come from V8's heap cheaply; longer ones are recycled. */
const POOL_MIN = 1024
/**
 * Upper bound on the bytes held by free arrays waiting for reuse (MOA_NATIVE_POOL_MB, default
 * 1024). It must hold a training step's working set: at 256 MB a batch of 64 rows of 45 tokens on
 * the d128 skills base overflowed it, and every step allocated 40+ MB afresh.
 */
const POOL_MAX_BYTES = (Number(process.env.MOA_NATIVE_POOL_MB) > 0 ? Number(process.env.MOA_NATIVE_POOL_MB) : 1024) * 1024 * 1024
/**
 * The capacity an array of n floats is pooled under: n rounded up to 4–8 significant steps of
 * its power of two (at most 25% over, usually under 12.5%). Batches padded to their longest row
 * change shape every step; pooled by exact size, almost no array was ever reused, and the fresh
 * ones (67 MB a step on the skills base) kept V8's major GC marking on two cores.
 */
export const poolCapacity = (n: number): number => {
  const k = Math.max(0, Math.ceil(Math.log2(n)) - 3)
  return Math.ceil(n / 2 ** k) * 2 ** k
}

/**
 * Output buffers are recycled: a fresh 512 KB Float32Array costs ~15× the kernel that fills it
 * (page faults, zeroing, GC of external memory). An array allocated by `alloc` goes back to the
 * pool when the last tensor data whose values live in its ArrayBuffer is disposed — views made
 * by cpu's Slice count as references — and never once its contents may have escaped to user
 * code (readSync/read/bufferSync/dataSync hand out the array itself).
 */
export class NativeBackend extends MathBackendCPU {
  private readonly pool = new Map<number, Float32Array[]>()
  private pooledBytes = 0
  private readonly owned = new WeakMap<ArrayBufferLike, { arr: Float32Array; refs: number }>()
  /** Buffers whose array was handed to user code (dataSync & co.): never written in place. */
  private readonly escaped = new WeakSet<ArrayBufferLike>()

  constructor(readonly addon: NativeAddon) {
    super()
    // MathBackendCPU prints an advert for tfjs-node on first use; initBackend reports the backend instead.
    ;(this as unknown as { firstUse: boolean }).firstUse = false
  }

  /** An output array of n floats; contents undefined (every kernel writes all of it). */
  alloc(n: number): Float32Array {
    if (n < POOL_MIN) return new Float32Array(n)
    const cap = poolCapacity(n)
    const got = this.pool.get(cap)?.pop()
    if (got) this.pooledBytes -= got.byteLength
    const arr = got ?? new Float32Array(cap)
    this.owned.set(arr.buffer, { arr, refs: 0 })
    // a view of exactly n floats (offset 0): kernels and the addon see an array of the size asked
    return cap === n ? arr : arr.subarray(0, n)
  }

  private track(values: unknown, delta: number): void {
    if (!(values instanceof Float32Array)) return
    const e = this.owned.get(values.buffer)
    if (!e) return
    e.refs += delta
    if (e.refs > 0) return
    this.owned.delete(values.buffer)
    if (this.pooledBytes + e.arr.byteLength > POOL_MAX_BYTES) return
    let list = this.pool.get(e.arr.length)
    if (!list) this.pool.set(e.arr.length, (list = []))
    list.push(e.arr)
    this.pooledBytes += e.arr.byteLength
  }

  private escape(values: unknown): void {
    if (!(values instanceof Float32Array)) return
    this.owned.delete(values.buffer)
    this.escaped.add(values.buffer)
  }

  /** True when user code may hold this array (readSync/dataSync returned it): in-place writers copy first. */
  hasEscaped(values: Float32Array): boolean {
    return this.escaped.has(values.buffer)
  }

  override write(values: tf.backend_util.BackendValues, shape: number[], dtype: tf.DataType) {
    const id = super.write(values, shape, dtype)
    this.track(values, +1)
    return id
  }

  override move(dataId: object, values: tf.backend_util.BackendValues, shape: number[], dtype: tf.DataType, refCount: number): void {
    const old = this.data.get(dataId)?.values
    super.move(dataId, values, shape, dtype, refCount)
    if (old !== values) { this.track(old, -1); this.track(values, +1) }
  }

  override disposeData(dataId: object, force?: boolean): boolean {
    const values = this.data.get(dataId)?.values
    const r = super.disposeData(dataId, force)
    if (values !== undefined && !this.data.has(dataId)) this.track(values, -1)
    return r
  }

  override readSync(dataId: object): tf.backend_util.BackendValues {
    const v = super.readSync(dataId)
    this.escape(v)
    this.escape(this.data.get(dataId)?.values)
    return v
  }

  override bufferSync<R extends tf.Rank, D extends tf.DataType>(t: TensorInfo): tf.TensorBuffer<R, D> {
    const b = super.bufferSync<R, D>(t)
    this.escape(b.values)
    return b
  }

  /** Free arrays held for reuse, and their bytes (for tests and diagnostics). */
  poolStats(): { arrays: number; bytes: number } {
    let arrays = 0
    for (const l of this.pool.values()) arrays += l.length
    return { arrays, bytes: this.pooledBytes }
  }
  /** The Float32Array behind a float32 tensor, or undefined when it is not a plain float32 one. */
  f32(t: TensorInfo): Float32Array | undefined {
    if (t.dtype !== "float32") return undefined
    const v = this.data.get(t.dataId)?.values
    return v instanceof Float32Array ? v : undefined
  }
  out(shape: number[], values: Float32Array): TensorInfo {
    return this.makeTensorInfo(shape, "float32", values)
  }
}

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1)

// ---- meta buffers reused across calls (the addon reads them synchronously) ----
const meta = new Int32Array(1 + 3 * 6)

/** Broadcast strides of `shape` against `outShape` (0 on broadcast dims), right-aligned. */
function bcastStrides(shape: readonly number[], outShape: readonly number[]): number[] {
  const r = outShape.length
  const s = new Array<number>(r).fill(0)
  let stride = 1
  for (let i = shape.length - 1, d = r - 1; i >= 0; i--, d--) {
    s[d] = shape[i] === 1 && outShape[d] !== 1 ? 0 : stride
    stride *= shape[i]
  }
  return s
}

/** Fill `meta` for a broadcast binary op; returns false when it does not fit in 6 dims. */
function binaryMeta(aShape: readonly number[], bShape: readonly number[], outShape: readonly number[]): boolean {
  const sa = bcastStrides(aShape, outShape)
  const sb = bcastStrides(bShape, outShape)
  // Drop size-1 dims, then merge neighbours that are contiguous for both operands.
  const shp: number[] = [], A: number[] = [], B: number[] = []
  for (let d = 0; d < outShape.length; d++) {
    if (outShape[d] === 1) continue
    const n = shp.length
    if (n > 0 && A[n - 1] === sa[d] * outShape[d] && B[n - 1] === sb[d] * outShape[d]) {
      shp[n - 1] *= outShape[d]
      A[n - 1] = sa[d]
      B[n - 1] = sb[d]
    } else {
      shp.push(outShape[d]); A.push(sa[d]); B.push(sb[d])
    }
  }
  if (shp.length === 0) { shp.push(1); A.push(1); B.push(1) }
  const nd = shp.length
  if (nd > 6) return false
  meta[0] = nd
  for (let d = 0; d < nd; d++) {
    meta[1 + d] = shp[d]; meta[1 + nd + d] = A[d]; meta[1 + 2 * nd + d] = B[d]
  }
  return true
}

const BINARY: Record<string, number> = {
  Add: 0, Sub: 1, Multiply: 2, RealDiv: 3, Maximum: 4, Minimum: 5, SquaredDifference: 6,
}
const UNARY: Record<string, number> = {
  Exp: 0, Log: 1, Sigmoid: 2, Tanh: 3, Neg: 4, Sqrt: 5, Rsqrt: 6, Square: 7, Reciprocal: 8, Abs: 9, Relu: 10,
  Softplus: 12,
}

function binaryKernel(op: number, fallback: KernelFn): KernelFn {
  return (args) => {
    const { a, b } = args.inputs
    const be = args.backend
    const av = be.f32(a), bv = be.f32(b)
    if (!av || !bv || av.length === 0 || bv.length === 0) return fallback(args)
    const outShape = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape)
    if (!binaryMeta(a.shape, b.shape, outShape)) return fallback(args)
    const out = be.alloc(size(outShape))
    be.addon.binary(op, av, bv, out, meta)
    return be.out(outShape, out)
  }
}

function unaryKernel(op: number, fallback: KernelFn): KernelFn {
  return (args) => {
    const { x } = args.inputs
    const be = args.backend
    const xv = be.f32(x)
    if (!xv || xv.length === 0) return fallback(args)
    const out = be.alloc(xv.length)
    be.addon.unary(op, xv, out)
    return be.out(x.shape.slice(), out)
  }
}

function batchMatMul(fallback: KernelFn): KernelFn {
  return (args) => {
    const { a, b } = args.inputs
    const { transposeA, transposeB } = args.attrs as { transposeA: boolean; transposeB: boolean }
    const be = args.backend
    const av = be.f32(a), bv = be.f32(b)
    if (!av || !bv) return fallback(args)
    const ar = a.shape.length, br = b.shape.length
    const M = transposeA ? a.shape[ar - 1] : a.shape[ar - 2]
    const K = transposeA ? a.shape[ar - 2] : a.shape[ar - 1]
    const Kb = transposeB ? b.shape[br - 1] : b.shape[br - 2]
    const N = transposeB ? b.shape[br - 2] : b.shape[br - 1]
    if (K !== Kb) return fallback(args) // the cpu kernel throws the standard message
    const batchA = size(a.shape.slice(0, -2)), batchB = size(b.shape.slice(0, -2))
    const outOuter = tf.backend_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2))
    const batch = size(outOuter)
    if ((batchA !== batch && batchA !== 1) || (batchB !== batch && batchB !== 1)) return fallback(args)
    const outShape = [...outOuter, M, N]
    if (batch * M * N === 0) return be.out(outShape, new Float32Array(0))
    const out = be.alloc(batch * M * N)
    if (batch > 1 && batchB === 1 && batchA === batch && !transposeA) {
      // [batch·M, K] × [K, N]: one big product.
      be.addon.gemm(av, bv, out, 1, batch * M, N, K, 0, transposeB ? 1 : 0, 0, 0)
    } else {
      be.addon.gemm(av, bv, out, batch, M, N, K, transposeA ? 1 : 0, transposeB ? 1 : 0,
        batchA === 1 ? 0 : M * K, batchB === 1 ? 0 : K * N)
    }
    return be.out(outShape, out)
  }
}

function softmax(fallback: KernelFn): KernelFn {
  return (args) => {
    const { logits } = args.inputs
    const { dim } = args.attrs as { dim: number }
    const be = args.backend
    const xv = be.f32(logits)
    const rank = logits.shape.length
    if (!xv || xv.length === 0 || (dim !== -1 && dim !== rank - 1)) return fallback(args)
    const cols = logits.shape[rank - 1]
    const out = be.alloc(xv.length)
    be.addon.softmax(xv, out, xv.length / cols, cols)
    return be.out(logits.shape.slice(), out)
  }
}

/** Sum / Mean / Max / Min over a contiguous block of axes. */
function reduceKernel(op: number, axisAttr: "axis" | "reductionIndices", fallback: KernelFn): KernelFn {
  return (args) => {
    const { x } = args.inputs
    const be = args.backend
    const xv = be.f32(x)
    if (!xv || xv.length === 0) return fallback(args)
    const attrs = args.attrs as Record<string, unknown>
    const keepDims = Boolean(attrs.keepDims)
    const axes = tf.util.parseAxisParam(attrs[axisAttr] as number | number[], x.shape).sort((p, q) => p - q)
    if (axes.length === 0) return fallback(args)
    for (let i = 1; i < axes.length; i++) if (axes[i] !== axes[i - 1] + 1) return fallback(args)
    const a0 = axes[0], a1 = axes[axes.length - 1]
    const outer = size(x.shape.slice(0, a0)), mid = size(x.shape.slice(a0, a1 + 1)), inner = size(x.shape.slice(a1 + 1))
    const outShape = keepDims
      ? x.shape.map((d, i) => (i >= a0 && i <= a1 ? 1 : d))
      : x.shape.filter((_, i) => i < a0 || i > a1)
    const out = be.alloc(outer * inner)
    be.addon.reduce(op, xv, out, outer, mid, inner)
    return be.out(outShape, out)
  }
}

function transpose(fallback: KernelFn): KernelFn {
  return (args) => {
    const { x } = args.inputs
    const { perm } = args.attrs as { perm: number[] }
    const be = args.backend
    const xv = be.f32(x)
    if (!xv || xv.length === 0) return fallback(args)
    const rank = x.shape.length
    const inStrides = new Array<number>(rank)
    for (let d = rank - 1, s = 1; d >= 0; d--) { inStrides[d] = s; s *= x.shape[d] }
    const outShape = perm.map((p) => x.shape[p])
    // Merge output axes that are consecutive in the input; drop size-1 axes.
    const shp: number[] = [], st: number[] = []
    let prev = -2
    for (let d = 0; d < rank; d++) {
      const p = perm[d]
      if (x.shape[p] === 1) continue
      if (shp.length > 0 && p === prev + 1) {
        shp[shp.length - 1] *= x.shape[p]
        st[st.length - 1] = inStrides[p]
      } else {
        shp.push(x.shape[p]); st.push(inStrides[p])
      }
      prev = p
    }
    if (shp.length > 6) return fallback(args)
    if (shp.length <= 1) return be.out(outShape, xv.slice()) // only size-1 axes moved: a copy
    meta[0] = shp.length
    for (let d = 0; d < shp.length; d++) { meta[1 + d] = shp[d]; meta[1 + shp.length + d] = st[d] }
    const out = be.alloc(xv.length)
    be.addon.transpose(xv, out, meta)
    return be.out(outShape, out)
  }
}

function addN(fallback: KernelFn): KernelFn {
  return (args) => {
    const tensors = Object.values(args.inputs)
    const be = args.backend
    const vals = tensors.map((t) => be.f32(t))
    const n = vals[0]?.length ?? 0
    if (n === 0 || vals.some((v) => !v || v.length !== n)) return fallback(args)
    const out = be.alloc(n)
    meta[0] = 1; meta[1] = n; meta[2] = 1; meta[3] = 1
    if (vals.length === 1) out.set(vals[0]!)
    else {
      be.addon.binary(0, vals[0]!, vals[1]!, out, meta)
      for (let i = 2; i < vals.length; i++) be.addon.binary(0, out, vals[i]!, out, meta)
    }
    return be.out(tensors[0].shape.slice(), out)
  }
}

/** Embedding lookup: rows of a float32 table (axis 0, no batch dims), copied with TypedArray.set. */
function gatherV2(fallback: KernelFn): KernelFn {
  return (args) => {
    const { x, indices } = args.inputs
    const { axis, batchDims } = args.attrs as { axis: number; batchDims: number }
    const be = args.backend
    const xv = be.f32(x)
    const iv = be.data.get(indices.dataId)?.values
    if (!xv || (axis !== 0 && axis !== -x.shape.length) || batchDims || indices.dtype !== "int32" || !(iv instanceof Int32Array)) {
      return fallback(args)
    }
    const rows = x.shape[0], w = xv.length / rows
    const out = be.alloc(iv.length * w)
    for (let i = 0; i < iv.length; i++) {
      const r = iv[i]
      if (r < 0 || r >= rows) return fallback(args) // the cpu kernel throws its message
      out.set(xv.subarray(r * w, r * w + w), i * w)
    }
    return be.out([...indices.shape, ...x.shape.slice(1)], out)
  }
}

/** The gradient of gather: rows of x added into numSegments rows (cpu's kernel is O(segments·N)). */
function unsortedSegmentSum(fallback: KernelFn): KernelFn {
  return (args) => {
    const { x, segmentIds } = args.inputs
    const { numSegments } = args.attrs as { numSegments: number }
    const be = args.backend
    const xv = be.f32(x)
    const sv = be.data.get(segmentIds.dataId)?.values
    if (!xv || !(sv instanceof Int32Array) || segmentIds.shape.length !== 1 || segmentIds.shape[0] !== x.shape[0]) {
      return fallback(args)
    }
    const w = x.shape.slice(1).reduce((a, b) => a * b, 1)
    const out = new Float32Array(numSegments * w)
    for (let i = 0; i < sv.length; i++) {
      const s = sv[i]
      if (s < 0 || s >= numSegments) continue // TF drops out-of-range ids
      const o = s * w, xi = i * w
      for (let j = 0; j < w; j++) out[o + j] += xv[xi + j]
    }
    return be.out([numSegments, ...x.shape.slice(1)], out)
  }
}

// ---- fused training kernels of our own (used by src/native/ops.ts through tf.customGrad) ----

function need(be: NativeBackend, t: TensorInfo, what: string): Float32Array {
  const v = be.f32(t)
  if (!v) throw new Error(`native ${what}: expects a float32 tensor of the native backend`)
  return v
}

const EMPTY = new Float32Array(0)

/** Our kernels: name → implementation (registered for backend "native" only). */
export const FUSED_KERNELS: Record<string, KernelFn> = {
  MoaGelu: ({ inputs: { x }, backend: be }) => {
    const out = be.alloc(x.shape.reduce((a, b) => a * b, 1))
    be.addon.gelu!(need(be, x, "MoaGelu"), out)
    return be.out(x.shape.slice(), out)
  },
  MoaGeluGrad: ({ inputs: { x, dy }, backend: be }) => {
    const out = be.alloc(x.shape.reduce((a, b) => a * b, 1))
    be.addon.geluGrad!(need(be, x, "MoaGeluGrad"), need(be, dy, "MoaGeluGrad"), out)
    return be.out(x.shape.slice(), out)
  },
  // x (N, C), w (C), b (C) or absent (RMSNorm) → y (N, C), mean (N), rstd (N)
  MoaLayerNorm: ({ inputs: { x, w, b }, backend: be }) => {
    const C = x.shape[x.shape.length - 1], N = size(x.shape) / C
    const y = be.alloc(N * C), mean = be.alloc(N), rstd = be.alloc(N)
    be.addon.layerNorm!(need(be, x, "MoaLayerNorm"), need(be, w, "MoaLayerNorm"), b ? need(be, b, "MoaLayerNorm") : EMPTY,
      y, mean, rstd, N, C, b ? 0 : 1)
    return [be.out(x.shape.slice(), y), be.out([N], mean), be.out([N], rstd)]
  },
  // → dx (N, C), dw (C), db (C) (LayerNorm) or dx, dw (RMSNorm: attrs.rms)
  MoaLayerNormGrad: ({ inputs: { x, w, mean, rstd, dy }, backend: be, attrs }) => {
    const C = x.shape[x.shape.length - 1], N = size(x.shape) / C
    const rms = Boolean(attrs?.rms)
    const dx = be.alloc(N * C), dw = new Float32Array(C), db = rms ? EMPTY : new Float32Array(C)
    be.addon.layerNormGrad!(need(be, x, "MoaLayerNormGrad"), need(be, w, "MoaLayerNormGrad"), need(be, mean, "MoaLayerNormGrad"),
      need(be, rstd, "MoaLayerNormGrad"), need(be, dy, "MoaLayerNormGrad"), dx, dw, db, N, C, rms ? 1 : 0)
    const out = [be.out(x.shape.slice(), dx), be.out([C], dw)]
    return rms ? out : [...out, be.out([C], db)]
  },
  // x (..., T, Tk) scores → softmax(scale·x) with keys j > query i masked (attrs.causal)
  MoaCausalSoftmax: ({ inputs: { x }, backend: be, attrs }) => {
    const cols = x.shape[x.shape.length - 1], T = x.shape[x.shape.length - 2], n = size(x.shape)
    const y = be.alloc(n)
    be.addon.causalSoftmax!(need(be, x, "MoaCausalSoftmax"), y, n / cols, cols, T, Number(attrs?.scale), attrs?.causal ? 1 : 0)
    return be.out(x.shape.slice(), y)
  },
  MoaSoftmaxGrad: ({ inputs: { y, dy }, backend: be, attrs }) => {
    const cols = y.shape[y.shape.length - 1], n = size(y.shape)
    const dx = be.alloc(n)
    be.addon.softmaxGrad!(need(be, y, "MoaSoftmaxGrad"), need(be, dy, "MoaSoftmaxGrad"), dx, n / cols, cols, Number(attrs?.scale))
    return be.out(y.shape.slice(), dx)
  },
  // q, k, v (B·T, C) → y (B·T, C), p [B, nh, T, T]; attrs B, T, nh, scale
  MoaAttention: ({ inputs: { q, k, v }, backend: be, attrs }) => {
    const { B, T, nh, scale } = attrs as { B: number; T: number; nh: number; scale: number }
    const n = size(q.shape)
    const y = be.alloc(n), p = be.alloc(B * nh * T * T)
    be.addon.attention!(need(be, q, "MoaAttention"), need(be, k, "MoaAttention"), need(be, v, "MoaAttention"), y, p, B, T, nh, scale)
    return [be.out(q.shape.slice(), y), be.out([B, nh, T, T], p)]
  },
  // x (N, K), w (K, M), b (M) or absent → x·w + b (N, M); its gradient is registered (lazy per input)
  MoaLinear: ({ inputs: { x, w, b }, backend: be }) => {
    const [N, K] = x.shape, M = w.shape[1]
    const y = be.alloc(N * M)
    be.addon.linear!(need(be, x, "MoaLinear"), need(be, w, "MoaLinear"), b ? need(be, b, "MoaLinear") : EMPTY, y, N, K, M)
    return be.out([N, M], y)
  },
  MoaAttentionGrad: ({ inputs: { q, k, v, p, dy }, backend: be, attrs }) => {
    const { B, T, nh, scale } = attrs as { B: number; T: number; nh: number; scale: number }
    const n = size(q.shape)
    const dq = be.alloc(n), dk = be.alloc(n), dv = be.alloc(n)
    be.addon.attentionGrad!(need(be, q, "MoaAttentionGrad"), need(be, k, "MoaAttentionGrad"), need(be, v, "MoaAttentionGrad"),
      need(be, p, "MoaAttentionGrad"), need(be, dy, "MoaAttentionGrad"), dq, dk, dv, B, T, nh, scale)
    return [be.out(q.shape.slice(), dq), be.out(q.shape.slice(), dk), be.out(q.shape.slice(), dv)]
  },
}

/** Names of the kernels the addon replaces (the rest are `cpu`'s). */
export const NATIVE_KERNELS = [
  "BatchMatMul", ...Object.keys(BINARY), ...Object.keys(UNARY), "Softmax", "Sum", "Mean", "Max", "Min", "Transpose", "AddN",
  "GatherV2", "UnsortedSegmentSum",
]

/** Registers backend "native" (idempotent) and all its kernels. */
export function registerNativeBackend(addon: NativeAddon): void {
  if (tf.findBackendFactory(NATIVE_BACKEND) != null) return
  if (tf.version_core !== TFJS_VERSION) {
    throw new Error(`native backend is pinned to tfjs ${TFJS_VERSION} (it reads cpu backend internals); found ${tf.version_core}`)
  }
  tf.registerBackend(NATIVE_BACKEND, () => new NativeBackend(addon), 3)
  const wrap: Record<string, (fb: KernelFn) => KernelFn> = {
    BatchMatMul: batchMatMul,
    Softmax: softmax,
    Sum: (fb) => reduceKernel(0, "axis", fb),
    Mean: (fb) => reduceKernel(1, "axis", fb),
    Max: (fb) => reduceKernel(2, "reductionIndices", fb),
    Min: (fb) => reduceKernel(3, "axis", fb),
    Transpose: transpose,
    AddN: addN,
    GatherV2: gatherV2,
    UnsortedSegmentSum: unsortedSegmentSum,
  }
  for (const [k, op] of Object.entries(BINARY)) wrap[k] = (fb) => binaryKernel(op, fb)
  for (const [k, op] of Object.entries(UNARY)) wrap[k] = (fb) => unaryKernel(op, fb)
  if (typeof addon.gelu === "function" && typeof addon.causalSoftmax === "function") {
    for (const [kernelName, fn] of Object.entries(FUSED_KERNELS))
      tf.registerKernel({ kernelName, backendName: NATIVE_BACKEND, kernelFunc: fn as unknown as tf.KernelFunc })
  }
  // MoaLinear's gradient as a registered gradient, not a customGrad: tfjs then computes only the
  // inputs' gradients that are needed (a frozen base weight under LoRA gets none).
  if (tf.getGradient("MoaLinear") == null) {
    tf.registerGradient({
      kernelName: "MoaLinear",
      inputsToSave: ["x", "w"],
      gradFunc: (dy, saved) => {
        const [x, w] = saved
        const d = dy as tf.Tensor2D
        return {
          x: () => tf.matMul(d, w as tf.Tensor2D, false, true),
          w: () => tf.matMul(x as tf.Tensor2D, d, true, false),
          b: () => tf.sum(d, 0),
        }
      },
    })
  }
  for (const cfg of tf.getKernelsForBackend("cpu")) {
    const cpuFn = cfg.kernelFunc as unknown as KernelFn
    const w = wrap[cfg.kernelName]
    const kernelFunc = (w ? w(cpuFn) : cpuFn) as unknown as tf.KernelFunc
    tf.registerKernel({ ...cfg, backendName: NATIVE_BACKEND, kernelFunc })
  }
}
