// The fused decode path: on the native backend, a cached forward (`GPT.hidden` with a KVCache,
// i.e. every generation step and the prompt before it) runs in ONE addon call — layernorm → q/k/v
// → attention over the cache → o_proj → MLP for every layer and token, with OpenBLAS sgemv/sgemm
// — instead of ~50 tfjs kernel calls per layer. The KV cache then lives in two Float32Arrays
// ([L, B, nh, Tmax, hs]) on the KVCache object.
//
// Linear layers with an override (LoRA, DoRA, quantized bases from packages/tune) are merged:
// the override is an affine map x ↦ x·W' + b' at inference, so probing it with the identity
// gives W' and b' exactly; a second, random probe checks that it really is affine (a LoRA with
// dropout in training mode is not) and otherwise the tfjs path runs, with one log line saying why.
// Merged weights are cached per override object, checked against the dataIds of every tensor
// reachable from it and of the base weight, its primitive fields (training, merged…)
// and the count of in-place optimizer updates (`inPlaceVersion`).
import * as tf from "@tensorflow/tfjs"
import type { GPT, KVCache } from "./gpt.js"
import { NativeBackend } from "./native/backend.js"
import { inPlaceVersion } from "./native/index.js"

/** The cache of the fused path: keys and values [L, B, nh, Tmax, hs]. */
export interface NativeKV {
  k: Float32Array
  v: Float32Array
  batch: number
}

const SLOTS_PER_LAYER = 16
const EMPTY = new Float32Array(0)

interface Merged {
  stamp: unknown[]
  version: number
  W: Float32Array
  b: Float32Array
}
/** by override object (adapters swapped per request each keep their merged weights) */
const mergedCache = new WeakMap<object, Merged>()
const logged = new WeakMap<GPT, Set<string>>()

function logOnce(model: GPT, why: string) {
  let s = logged.get(model)
  if (!s) logged.set(model, (s = new Set()))
  if (s.has(why)) return
  s.add(why)
  console.warn(`[moa/model] fused native decode not used: ${why}; decoding with tfjs ops`)
}

/** What identifies the state of an override: its tensors' dataIds and its primitive fields, two levels deep. */
function stampOf(o: unknown, out: unknown[], depth: number, seen: Set<unknown>) {
  if (o === null || typeof o !== "object" || seen.has(o)) return
  seen.add(o)
  for (const val of Object.values(o as Record<string, unknown>)) {
    if (val instanceof tf.Tensor) out.push(val.isDisposed ? "disposed" : val.dataId)
    else if (val === null || typeof val !== "object") typeof val !== "function" && out.push(val)
    else if (ArrayBuffer.isView(val)) out.push(val)
    else if (depth > 0) stampOf(val, out, depth - 1, seen)
  }
}

const sameStamp = (a: unknown[], b: unknown[]) => a.length === b.length && a.every((x, i) => x === b[i])

/** W' [in,out] and b' [out] of an overridden linear layer, or why it cannot be merged. */
function mergedLinear(model: GPT, name: string): Merged | string {
  const override = model.linearOverride(name)!
  const weight = model.params.get(`${name}.weight`)!
  const bias = model.params.get(`${name}.bias`)
  const stamp: unknown[] = [weight.dataId, bias?.dataId]
  stampOf(override, stamp, 2, new Set())
  const hit = mergedCache.get(override)
  if (hit && hit.version === inPlaceVersion() && sameStamp(hit.stamp, stamp)) return hit
  const [nin, nout] = weight.shape
  const [Y, xr, yr] = tf.tidy(() => {
    const X = tf.concat([tf.eye(nin), tf.zeros([1, nin])], 0) as tf.Tensor2D // (in+1, in)
    const probe = tf.randomUniform([3, nin], -1, 1, "float32", 7) as tf.Tensor2D
    return [model.linear(name, X), probe, model.linear(name, probe)]
  })
  try {
    if (Y.shape[0] !== nin + 1 || Y.shape[1] !== nout) return `the override of ${name} returns shape [${Y.shape}]`
    const y = Y.dataSync() as Float32Array
    const b = y.slice(nin * nout, (nin + 1) * nout)
    const W = new Float32Array(nin * nout)
    for (let r = 0; r < nin; r++) for (let j = 0; j < nout; j++) W[r * nout + j] = y[r * nout + j] - b[j]
    // affine check on a random probe: x·W' + b' must give what the override gives
    const x = xr.dataSync(), want = yr.dataSync()
    let worst = 0, scale = 1
    for (let i = 0; i < 3; i++)
      for (let j = 0; j < nout; j++) {
        let s = b[j]
        for (let r = 0; r < nin; r++) s += x[i * nin + r] * W[r * nout + j]
        worst = Math.max(worst, Math.abs(s - want[i * nout + j]))
        scale = Math.max(scale, Math.abs(want[i * nout + j]))
      }
    if (!(worst <= 1e-4 * scale)) return `the override of ${name} is not an affine map at inference (off by ${worst.toExponential(1)}; e.g. adapter dropout in training mode)`
    const m: Merged = { stamp, version: inPlaceVersion(), W, b }
    mergedCache.set(override, m)
    return m
  } finally {
    tf.dispose([Y, xr, yr])
  }
}

/** The weight slots of the addon's decode (see js_decode), or why the fused path cannot run. */
function slots(model: GPT, be: NativeBackend): Float32Array[] | string {
  const { nLayers: L, norm, position, tiedEmbeddings } = model.config
  void tiedEmbeddings // the head stays in tfjs
  const f32 = (n: string): Float32Array | string => {
    const v = model.params.get(n)
    if (!v) return EMPTY
    return be.f32(v) ?? `parameter ${n} is not float32 data of the native backend`
  }
  const out: (Float32Array | string)[] = [
    f32("wte.weight"),
    position === "learned" ? f32("wpe.weight") : EMPTY,
    f32("ln_f.weight"),
    norm === "layernorm" ? f32("ln_f.bias") : EMPTY,
  ]
  for (let i = 0; i < L; i++) {
    const p = `h.${i}`
    const lin = (name: string) => {
      if (model.linearOverride(name)) {
        const m = mergedLinear(model, name)
        if (typeof m === "string") out.push(m, m)
        else out.push(m.W, m.b)
      } else out.push(f32(`${name}.weight`), f32(`${name}.bias`))
    }
    out.push(f32(`${p}.ln_1.weight`), norm === "layernorm" ? f32(`${p}.ln_1.bias`) : EMPTY)
    for (const l of ["q_proj", "k_proj", "v_proj", "o_proj"]) lin(`${p}.attn.${l}`)
    out.push(f32(`${p}.ln_2.weight`), norm === "layernorm" ? f32(`${p}.ln_2.bias`) : EMPTY)
    lin(`${p}.mlp.fc_in`)
    lin(`${p}.mlp.fc_out`)
  }
  const bad = out.find((s) => typeof s === "string")
  return typeof bad === "string" ? bad : (out as Float32Array[])
}

/** Copies the fused path's cache into the KVCache's tensors (when decoding moves back to tfjs ops). */
function materialize(model: GPT, cache: KVCache, nat: NativeKV) {
  const { nLayers: L, nHeads: nh, dModel: C, contextLength: Tmax } = model.config
  const hs = C / nh, B = nat.batch, len = cache.length
  for (let l = 0; l < L; l++) {
    for (const [src, dst] of [[nat.k, cache.k], [nat.v, cache.v]] as const) {
      const a = new Float32Array(B * nh * len * hs)
      for (let bh = 0; bh < B * nh; bh++)
        a.set(src.subarray((l * B * nh + bh) * Tmax * hs, (l * B * nh + bh) * Tmax * hs + len * hs), bh * len * hs)
      dst[l]?.dispose()
      dst[l] = len > 0 ? tf.keep(tf.tensor4d(a, [B, nh, len, hs])) : undefined
    }
  }
  cache.native = undefined
}

/**
 * `model.hidden(ids, { cache })` through the addon's fused decode, or undefined when it does not
 * apply (not on native, disabled, or a layer cannot be merged: then the caller uses tfjs ops).
 * ids (B, T) int32 are the new tokens; returns the hidden states after ln_f, (B*T, C).
 */
export function fusedHidden(model: GPT, ids: tf.Tensor2D, cache: KVCache): tf.Tensor2D | undefined {
  const be = tf.backend()
  if (!(be instanceof NativeBackend)) return undefined
  if (process.env.MOA_FUSED_DECODE === "0") {
    if (cache.native) materialize(model, cache, cache.native)
    return undefined
  }
  if (!cache.native && (cache.k.some((t) => t !== undefined) || cache.length > 0)) return undefined // a tfjs-op cache continues as one
  if (typeof be.addon.decode !== "function") {
    logOnce(model, "the native addon was built before fused decode existed (run `npm run build:native`)")
    return undefined
  }
  const w = slots(model, be)
  if (typeof w === "string") {
    logOnce(model, w)
    if (cache.native) materialize(model, cache, cache.native)
    return undefined
  }
  const { nLayers: L, nHeads: nh, dModel: C, contextLength: Tmax, vocabSize: V, mlpRatio, norm, position } = model.config
  const [B, T] = ids.shape
  const past = cache.length
  if (ids.dtype !== "int32") throw new Error(`GPT.hidden: ids must be int32, got ${ids.dtype}`)
  if (!cache.native) {
    const n = L * B * C * Tmax
    cache.native = { k: new Float32Array(n), v: new Float32Array(n), batch: B }
  } else if (cache.native.batch !== B) {
    throw new Error(`GPT.hidden: the KV cache holds ${cache.native.batch} rows but ${B} were given`)
  }
  const meta = new Int32Array(11 + B)
  meta.set([B, T, C, nh, L, mlpRatio * C, V, Tmax, norm === "rmsnorm" ? 1 : 0, position === "rope" ? 1 : 0, past])
  for (let b = 0; b < B; b++) meta[11 + b] = cache.pad[b] ?? 0
  const tokens = ids.dataSync() as Int32Array
  const hidden = new Float32Array(B * T * C)
  be.addon.decode(w, meta, tokens, cache.native.k, cache.native.v, hidden)
  cache.length = past + T
  return tf.tensor2d(hidden, [B * T, C])
}
