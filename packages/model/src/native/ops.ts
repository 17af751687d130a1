// Fused training ops of the native backend, with their gradients (tf.customGrad): the model's
// GELU, LayerNorm/RMSNorm and scaled causal softmax each become one kernel forward and one
// backward, instead of 3 / 9 / 3 kernels forward and ~8 / ~15 / ~5 backward, each writing a
// full-size temporary. Used by src/gpt.ts when the active backend is "native" and the addon has
// the kernels (`fusedOps()` is undefined otherwise: the model keeps its tfjs composition).
import * as tf from "@tensorflow/tfjs"
import { NativeBackend } from "./backend.js"

type Save = tf.GradSaveFunc
type CustomGradFn = Parameters<typeof tf.customGrad>[0]
const run = (name: string, inputs: Record<string, tf.Tensor>, attrs: Record<string, unknown> = {}) =>
  tf.engine().runKernel(name, inputs as unknown as tf.NamedTensorMap, attrs as unknown as tf.NamedAttrMap)

export interface FusedOps {
  /** x·sigmoid(1.702x), elementwise */
  gelu(x: tf.Tensor): tf.Tensor
  /** x (N, C) → (x−μ)/√(var+1e-5)·w + b, per row */
  layerNorm(x: tf.Tensor2D, w: tf.Tensor1D, b: tf.Tensor1D): tf.Tensor2D
  /** x (N, C) → x/√(mean(x²)+1e-5)·w, per row */
  rmsNorm(x: tf.Tensor2D, w: tf.Tensor1D): tf.Tensor2D
  /** scores (..., T, T) → softmax(scale·scores) over the last axis with a causal mask (causal) */
  causalSoftmax(scores: tf.Tensor, scale: number, causal: boolean): tf.Tensor
  /**
   * Causal self-attention straight from the projections: q, k, v (B*T, C) → (B*T, C), heads
   * as column blocks (no transposes); softmax(q·kᵀ·scale) with keys after the query masked.
   * Absent when the addon predates it.
   */
  attention?(q: tf.Tensor2D, k: tf.Tensor2D, v: tf.Tensor2D, B: number, T: number, nh: number, scale: number): tf.Tensor2D
  /** x (N, K) · w (K, M) + b (M): one kernel; gradients only for the inputs that need one. Absent when the addon predates it. */
  linear?(x: tf.Tensor2D, w: tf.Tensor2D, b?: tf.Tensor1D): tf.Tensor2D
}

const gelu = tf.customGrad(((x: tf.Tensor, save: Save) => {
  save([x])
  return {
    value: run("MoaGelu", { x }) as tf.Tensor,
    gradFunc: (dy: tf.Tensor, [xs]: tf.Tensor[]) => run("MoaGeluGrad", { x: xs, dy }) as tf.Tensor,
  }
}) as unknown as CustomGradFn) as unknown as (x: tf.Tensor) => tf.Tensor

const layerNorm = tf.customGrad(((x: tf.Tensor, w: tf.Tensor, b: tf.Tensor, save: Save) => {
  const [y, mean, rstd] = run("MoaLayerNorm", { x, w, b }) as tf.Tensor[]
  save([x, w, mean, rstd])
  return {
    value: y,
    gradFunc: (dy: tf.Tensor, [xs, ws, m, r]: tf.Tensor[]) => run("MoaLayerNormGrad", { x: xs, w: ws, mean: m, rstd: r, dy }) as tf.Tensor[],
  }
}) as unknown as CustomGradFn) as unknown as (x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) => tf.Tensor

const rmsNorm = tf.customGrad(((x: tf.Tensor, w: tf.Tensor, save: Save) => {
  const [y, mean, rstd] = run("MoaLayerNorm", { x, w }) as tf.Tensor[]
  save([x, w, mean, rstd])
  return {
    value: y,
    gradFunc: (dy: tf.Tensor, [xs, ws, m, r]: tf.Tensor[]) => run("MoaLayerNormGrad", { x: xs, w: ws, mean: m, rstd: r, dy }, { rms: true }) as tf.Tensor[],
  }
}) as unknown as CustomGradFn) as unknown as (x: tf.Tensor, w: tf.Tensor) => tf.Tensor

/** One customGrad per (scale, causal): attributes cannot be tensors' inputs. */
const softmaxes = new Map<string, (x: tf.Tensor) => tf.Tensor>()
function causalSoftmax(x: tf.Tensor, scale: number, causal: boolean): tf.Tensor {
  const key = `${scale}/${causal}`
  let f = softmaxes.get(key)
  if (!f) {
    f = tf.customGrad(((s: tf.Tensor, save: Save) => {
      const y = run("MoaCausalSoftmax", { x: s }, { scale, causal }) as tf.Tensor
      save([y])
      return { value: y, gradFunc: (dy: tf.Tensor, [ys]: tf.Tensor[]) => run("MoaSoftmaxGrad", { y: ys, dy }, { scale }) as tf.Tensor }
    }) as unknown as CustomGradFn) as unknown as (x: tf.Tensor) => tf.Tensor
    softmaxes.set(key, f)
  }
  return f(x)
}

/** One customGrad per (B, T, nh, scale). */
const attentions = new Map<string, (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => tf.Tensor>()
function attention(q: tf.Tensor2D, k: tf.Tensor2D, v: tf.Tensor2D, B: number, T: number, nh: number, scale: number): tf.Tensor2D {
  const key = `${B}/${T}/${nh}/${scale}`
  let f = attentions.get(key)
  if (!f) {
    const attrs = { B, T, nh, scale }
    f = tf.customGrad(((qi: tf.Tensor, ki: tf.Tensor, vi: tf.Tensor, save: Save) => {
      const [y, p] = run("MoaAttention", { q: qi, k: ki, v: vi }, attrs) as tf.Tensor[]
      save([qi, ki, vi, p])
      return {
        value: y,
        gradFunc: (dy: tf.Tensor, [qs, ks, vs, ps]: tf.Tensor[]) => run("MoaAttentionGrad", { q: qs, k: ks, v: vs, p: ps, dy }, attrs) as tf.Tensor[],
      }
    }) as unknown as CustomGradFn) as unknown as (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => tf.Tensor
    attentions.set(key, f)
  }
  return f(q, k, v) as tf.Tensor2D
}

const OPS: FusedOps = {
  gelu,
  layerNorm: (x, w, b) => layerNorm(x, w, b) as tf.Tensor2D,
  rmsNorm: (x, w) => rmsNorm(x, w) as tf.Tensor2D,
  causalSoftmax,
}
const OPS_WITH_ATTENTION: FusedOps = { ...OPS, attention }
const linear = (x: tf.Tensor2D, w: tf.Tensor2D, b?: tf.Tensor1D) =>
  run("MoaLinear", b ? { x, w, b } : { x, w }) as tf.Tensor2D
const OPS_WITH_LINEAR: FusedOps = { ...OPS_WITH_ATTENTION, linear }

/** The fused ops when the active backend is native and its addon has them; else undefined. */
export function fusedOps(): FusedOps | undefined {
  if (process.env.MOA_FUSED_OPS === "0") return undefined
  const be = tf.backend()
  if (!(be instanceof NativeBackend) || typeof be.addon.gelu !== "function" || typeof be.addon.causalSoftmax !== "function") return undefined
  if (typeof be.addon.attention !== "function") return OPS
  return typeof be.addon.linear === "function" && process.env.MOA_FUSED_LINEAR !== "0" ? OPS_WITH_LINEAR : OPS_WITH_ATTENTION
}
