/**
 * LoRA and DoRA on the model's linear hook.
 *
 * LoRA (Hu et al. 2021):   y = x W + b + s · dropout(x) A B            s = alpha / r  (rsLoRA: alpha / √r)
 * DoRA (Liu et al. 2024):  y = m ⊙ (W + s A B) / ‖W + s A B‖_col · x + b
 *   with the column norm ‖·‖ (one per output) treated as a constant in the backward pass,
 *   as in the paper §4.3 and Hugging Face PEFT.
 *
 * In memory A is [in, r] and B is [r, out] (so x A B needs no transpose); on disk they are
 * PEFT's lora_A.weight [r, in] and lora_B.weight [out, r].
 */
import * as tf from "@tensorflow/tfjs"
import type { LinearContext, LinearOverride } from "./hook.ts"

export interface LoraOptions {
  readonly r: number
  readonly alpha: number
  readonly dropout?: number
  readonly rslora?: boolean
  readonly dora?: boolean
  readonly seed?: number
}

export const loraScaling = (o: { r: number; alpha: number; rslora?: boolean }): number => (o.rslora ? o.alpha / Math.sqrt(o.r) : o.alpha / o.r)

/** Identity in the forward pass, zero gradient in the backward pass (torch's .detach()). */
const detach = (x: tf.Tensor): tf.Tensor =>
  tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const t = args[0] as tf.Tensor
    return { value: t.clone(), gradFunc: (dy: tf.Tensor | tf.Tensor[]) => tf.zerosLike(dy as tf.Tensor) }
  })(x)

/** Column norms of W + s·A·B: one per output feature. W [in,out] → [out]. */
export const columnNorm = (w: tf.Tensor2D, a: tf.Tensor2D, b: tf.Tensor2D, scaling: number): tf.Tensor1D =>
  tf.tidy(() => tf.sqrt(tf.sum(tf.square(tf.add(w, tf.mul(tf.matMul(a, b), scaling))), 0)) as tf.Tensor1D)

/** tfjs variable names are global; every layer instance gets its own prefix so that many adapters can coexist. */
let instances = 0

export class LoraLayer implements LinearOverride {
  readonly name: string
  readonly inFeatures: number
  readonly outFeatures: number
  readonly r: number
  readonly alpha: number
  readonly scaling: number
  readonly dropout: number
  /** [in, r] */
  readonly A: tf.Variable<tf.Rank.R2>
  /** [r, out] */
  readonly B: tf.Variable<tf.Rank.R2>
  /** DoRA magnitude m [out]; undefined for plain LoRA. Initialised lazily from ‖W‖ on first sight of W. */
  magnitude: tf.Variable<tf.Rank.R1> | undefined
  readonly dora: boolean
  /** Dropout is applied only while training. */
  training = false
  /** True while the update is folded into the base weight (forward is then the plain base). */
  merged = false
  private mergedNorm: tf.Tensor1D | undefined
  /** Prefix of this instance's tfjs variable names (`lora<k>/<module>.lora_A`). */
  readonly id: string

  constructor(name: string, inFeatures: number, outFeatures: number, o: LoraOptions) {
    if (!(Number.isInteger(o.r) && o.r > 0)) throw new Error(`LoRA rank r must be a positive integer, got ${o.r}`)
    if (!(o.alpha > 0)) throw new Error(`LoRA alpha must be positive, got ${o.alpha}`)
    const dropout = o.dropout ?? 0
    if (!(dropout >= 0 && dropout < 1)) throw new Error(`LoRA dropout must be in [0, 1), got ${dropout}`)
    this.name = name
    this.inFeatures = inFeatures
    this.outFeatures = outFeatures
    this.r = o.r
    this.alpha = o.alpha
    this.scaling = loraScaling(o)
    this.dropout = dropout
    this.dora = o.dora ?? false
    // PEFT: A ~ kaiming_uniform(a=√5) → U(−1/√in, 1/√in); B = 0, so the adapter starts as the identity.
    const bound = 1 / Math.sqrt(inFeatures)
    this.id = `lora${instances++}/${name}`
    this.A = tf.variable(tf.randomUniform([inFeatures, o.r], -bound, bound, "float32", o.seed), true, `${this.id}.lora_A`)
    this.B = tf.variable(tf.zeros([o.r, outFeatures]), true, `${this.id}.lora_B`)
  }

  /** DoRA needs ‖W‖ to start m; call with the base weight [in,out] before training. */
  initMagnitude(weight: tf.Tensor2D): void {
    if (!this.dora || this.magnitude) return
    this.magnitude = tf.variable(tf.tidy(() => tf.sqrt(tf.sum(tf.square(weight), 0))) as tf.Tensor1D, true, `${this.id}.lora_magnitude_vector`)
  }

  variables(): tf.Variable[] {
    return this.magnitude ? [this.A, this.B, this.magnitude] : [this.A, this.B]
  }

  forward(x: tf.Tensor2D, ctx: LinearContext): tf.Tensor2D {
    if (this.merged) return ctx.base(x)
    const y = ctx.base(x) // [N, out]
    const xd = this.training && this.dropout > 0 ? (tf.dropout(x, this.dropout) as tf.Tensor2D) : x
    const lora = tf.mul(tf.matMul(tf.matMul(xd, this.A), this.B), this.scaling) as tf.Tensor2D // [N, out]
    if (!this.dora) return tf.add(y, lora)
    if (!this.magnitude) this.initMagnitude(ctx.weight)
    const norm = detach(columnNorm(ctx.weight, this.A, this.B, this.scaling)) // [out], constant for the gradient
    const s = tf.div(this.magnitude!, norm) // [out]
    // y + (s−1)·(xd W) + s·lora  ==  s·(x W + lora) + b  when there is no dropout
    const xdW = xd === x ? (ctx.bias ? tf.sub(y, ctx.bias) : y) : tf.matMul(xd, ctx.weight)
    return tf.add(y, tf.add(tf.mul(tf.sub(s, 1), xdW), tf.mul(s, lora))) as tf.Tensor2D
  }

  /** The weight the adapted layer computes with, W' [in,out], for W [in,out]. */
  effectiveWeight(weight: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => {
      const w = tf.add(weight, tf.mul(tf.matMul(this.A, this.B), this.scaling)) as tf.Tensor2D
      if (!this.dora) return w
      if (!this.magnitude) this.initMagnitude(weight)
      return tf.mul(w, tf.div(this.magnitude!, columnNorm(weight, this.A, this.B, this.scaling))) as tf.Tensor2D
    })
  }

  /** Fold the adapter into the base weight variable ([in,out]); forward then is the plain base. */
  merge(weight: tf.Variable<tf.Rank.R2>): void {
    if (this.merged) throw new Error(`${this.name}: the adapter is already merged`)
    if (this.dora) this.mergedNorm = columnNorm(weight, this.A, this.B, this.scaling)
    const w = this.effectiveWeight(weight)
    weight.assign(w)
    w.dispose()
    this.merged = true
  }

  /** Undo merge(): restore the base weight exactly (up to float rounding). */
  unmerge(weight: tf.Variable<tf.Rank.R2>): void {
    if (!this.merged) throw new Error(`${this.name}: the adapter is not merged`)
    const w = tf.tidy(() => {
      let v: tf.Tensor2D = weight
      if (this.dora) v = tf.mul(v, tf.div(this.mergedNorm!, this.magnitude!)) as tf.Tensor2D
      return tf.sub(v, tf.mul(tf.matMul(this.A, this.B), this.scaling)) as tf.Tensor2D
    })
    weight.assign(w)
    w.dispose()
    this.mergedNorm?.dispose()
    this.mergedNorm = undefined
    this.merged = false
  }

  dispose(): void {
    for (const v of this.variables()) v.dispose()
    this.mergedNorm?.dispose()
  }
}
