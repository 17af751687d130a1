// The native CPU backend's entry point, used by the model's `initBackend`:
//   const native = await import("./native/index.js")
//   if (native.available()) { await native.register(); await tf.setBackend("native") }
//   else log(native.reason())
import * as tf from "@tensorflow/tfjs"
import { loadAddon } from "./addon.js"
import { NativeBackend, registerNativeBackend } from "./backend.js"

export { NATIVE_BACKEND, NATIVE_KERNELS, poolCapacity } from "./backend.js"
export { addonPath, loadAddon, type NativeAddon } from "./addon.js"

/** True when the addon is built and loads (and MOA_NATIVE is not "0"). Never throws. */
export function available(): boolean {
  return loadAddon().addon !== undefined
}

/** Why the native backend is unavailable ("" when it is available). */
export function reason(): string {
  return loadAddon().reason ?? ""
}

/** Registers the tfjs backend "native" and its kernels (idempotent). Does not make it active. */
export async function register(): Promise<void> {
  const { addon, reason } = loadAddon()
  if (!addon) throw new Error(`native backend unavailable: ${reason}`)
  registerNativeBackend(addon)
}

/** OpenBLAS build, OpenMP and thread count the addon runs with, e.g. for logs and benchmarks. */
export function describe(): string {
  const { addon, reason } = loadAddon()
  return addon ? addon.config() : `unavailable: ${reason}`
}

/**
 * AdamW step in place on float32 Float32Arrays (one fused native loop instead of ~12 tfjs ops
 * per variable): m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²; p -= lr·(m/bc1)/(√(v/bc2)+ε) + lr·wd·p,
 * with bc1 = 1-β1^t, bc2 = 1-β2^t. Throws when the addon is unavailable.
 */
export interface AdamWOptions {
  lr: number
  beta1: number
  beta2: number
  eps: number
  /** decoupled weight decay (0 for vectors if you decay matrices only) */
  weightDecay: number
  /** 1-based step number t, for the bias corrections 1-β^t */
  step: number
  /** multiplies the gradient first (clipping, accumulation); default 1 */
  gradScale?: number
}

export function adamStep(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, o: AdamWOptions): void {
  const { addon, reason } = loadAddon()
  if (!addon) throw new Error(`native backend unavailable: ${reason}`)
  const n = p.length
  if (g.length !== n || m.length !== n || v.length !== n) {
    throw new Error(`adamStep: lengths differ (param ${n}, grad ${g.length}, m ${m.length}, v ${v.length})`)
  }
  if (!(o.step >= 1)) throw new Error(`adamStep: step must be ≥ 1 (got ${o.step})`)
  addon.adam(p, g, m, v, o.lr, o.beta1, o.beta2, o.eps, o.weightDecay,
    1 - Math.pow(o.beta1, o.step), 1 - Math.pow(o.beta2, o.step), o.gradScale ?? 1)
}

let inPlaceWrites = 0

/**
 * Counts the in-place variable updates done by `adamWStepInPlace`. A variable's `dataId` changes
 * on `assign`, but not when it is updated in place: caches of values derived from variables
 * (e.g. the fused decoder's merged adapter weights) compare this counter too.
 */
export function inPlaceVersion(): number {
  return inPlaceWrites
}

/** Arrays made by ownedValues: nobody else can hold them unless they escape through dataSync. */
const privateArrays = new WeakSet<Float32Array>()

/** The Float32Array of a float32 tensor on the active native backend, owned by this tensor alone.
 *  The first in-place write to a variable works on a private copy: its array may be shared with
 *  another variable (AdamW's m and v start from one zeros tensor) or with user code (a tensor made
 *  from a caller's array, e.g. a decoded checkpoint); so does a write after dataSync handed the
 *  array out, so the caller's snapshot stays intact. */
function ownedValues(be: NativeBackend, v: tf.Variable): Float32Array {
  const cur = be.f32(v)
  if (!cur) throw new Error("adamWStepInPlace: variable is not float32 on the native backend")
  if (!privateArrays.has(cur) || be.refCount(v.dataId) > 1 || be.hasEscaped(cur)) {
    const copy = tf.tensor(cur.slice(), v.shape, "float32")
    v.assign(copy)
    copy.dispose()
    const own = be.f32(v)
    if (!own) throw new Error("adamWStepInPlace: variable is not float32 on the native backend")
    privateArrays.add(own)
    return own
  }
  return cur
}

/**
 * One AdamW update of `param` (and its moments m, v) in place, in one native loop — instead of
 * the ~12 tfjs ops per parameter of a tensor-level optimizer. Same formula as above.
 * Returns false (and does nothing) unless the active backend is "native" and all tensors are
 * float32 of the same size: the caller then runs its tensor-level update.
 */
export function adamWStepInPlace(param: tf.Variable, grad: tf.Tensor, m: tf.Variable, v: tf.Variable, o: AdamWOptions): boolean {
  const be = tf.backend()
  if (!(be instanceof NativeBackend)) return false
  const n = param.size
  if ([param, grad, m, v].some((t) => t.dtype !== "float32" || t.size !== n)) return false
  const gv = be.f32(grad)
  if (!gv) return false
  const pv = ownedValues(be, param), mv = ownedValues(be, m), vv = ownedValues(be, v)
  inPlaceWrites++
  adamStep(pv, gv, mv, vv, o)
  return true
}
