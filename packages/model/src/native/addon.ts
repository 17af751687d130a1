// Loads the compiled addon (packages/model/native/build/Release/moa_native.node) once.
// Never throws: when the addon is missing or cannot load, `loadAddon()` says why.
import { createRequire } from "node:module"
import { existsSync } from "node:fs"
import { fileURLToPath } from "node:url"
import path from "node:path"

/** The functions exported by native/src/moa_native.c (all synchronous, zero-copy on Float32Arrays). */
export interface NativeAddon {
  setThreads(n: number): number
  config(): string
  /** c[i] = op(a[i])·op(b[i]) for i < batch; op(a) M×K, op(b) K×N; strides in elements, 0 = broadcast. */
  gemm(a: Float32Array, b: Float32Array, c: Float32Array, batch: number, M: number, N: number, K: number,
    transA: number, transB: number, strideA: number, strideB: number): void
  /** meta = [ndim, shape…, aStrides…, bStrides…] */
  binary(op: number, a: Float32Array, b: Float32Array, out: Float32Array, meta: Int32Array): void
  unary(op: number, x: Float32Array, out: Float32Array): void
  softmax(x: Float32Array, out: Float32Array, rows: number, cols: number): void
  /** x as [outer, mid, inner] reduced over mid. */
  reduce(op: number, x: Float32Array, out: Float32Array, outer: number, mid: number, inner: number): void
  /** meta = [ndim, outShape…, inStrides…] */
  transpose(x: Float32Array, out: Float32Array, meta: Int32Array): void
  /** The GPT's cached forward for new tokens, fused (see js_decode in moa_native.c for the layouts). */
  decode?(slots: Float32Array[], meta: Int32Array, tokens: Int32Array, kc: Float32Array, vc: Float32Array, hidden: Float32Array): void
  // Fused training kernels (absent from addons built before them; see src/native/ops.ts).
  gelu?(x: Float32Array, y: Float32Array): void
  geluGrad?(x: Float32Array, dy: Float32Array, dx: Float32Array): void
  /** b, db: empty for RMSNorm */
  layerNorm?(x: Float32Array, w: Float32Array, b: Float32Array, y: Float32Array, mean: Float32Array, rstd: Float32Array,
    rows: number, C: number, rms: number): void
  layerNormGrad?(x: Float32Array, w: Float32Array, mean: Float32Array, rstd: Float32Array, dy: Float32Array, dx: Float32Array,
    dw: Float32Array, db: Float32Array, rows: number, C: number, rms: number): void
  causalSoftmax?(x: Float32Array, y: Float32Array, rows: number, cols: number, T: number, scale: number, causal: number): void
  softmaxGrad?(y: Float32Array, dy: Float32Array, dx: Float32Array, rows: number, cols: number, scale: number): void
  /** causal self-attention from q, k, v (B·T, C) → y (B·T, C) and the probabilities p [B, nh, T, T] */
  attention?(q: Float32Array, k: Float32Array, v: Float32Array, y: Float32Array, p: Float32Array, B: number, T: number, nh: number, scale: number): void
  attentionGrad?(q: Float32Array, k: Float32Array, v: Float32Array, p: Float32Array, dy: Float32Array, dq: Float32Array, dk: Float32Array,
    dv: Float32Array, B: number, T: number, nh: number, scale: number): void
  /** y[N,M] = x[N,K]·w[K,M] + b (b empty: no bias) */
  linear?(x: Float32Array, w: Float32Array, b: Float32Array, y: Float32Array, N: number, K: number, M: number): void
  adam(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, lr: number, beta1: number,
    beta2: number, eps: number, weightDecay: number, bc1: number, bc2: number, gradScale: number): void
}

export const addonPath = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)), "../../native/build/Release/moa_native.node")

let cached: { addon?: NativeAddon; reason?: string } | undefined

export function loadAddon(): { addon?: NativeAddon; reason?: string } {
  if (cached) return cached
  if (process.env.MOA_NATIVE === "0") {
    cached = { reason: "disabled by MOA_NATIVE=0" }
  } else if (!existsSync(addonPath)) {
    cached = { reason: `addon not built (${addonPath} missing; run \`npm run build:native\`, needs a C compiler and libopenblas-dev)` }
  } else {
    try {
      const require = createRequire(import.meta.url)
      const addon = require(addonPath) as NativeAddon
      const threads = Number(process.env.MOA_NATIVE_THREADS ?? 2)
      addon.setThreads(Number.isInteger(threads) && threads > 0 ? threads : 2)
      cached = { addon }
    } catch (e) {
      cached = { reason: `addon failed to load: ${(e as Error).message}` }
    }
  }
  return cached
}
