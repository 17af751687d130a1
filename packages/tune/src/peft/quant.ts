/**
 * QLoRA-style frozen base: a linear weight held in int8 (one scale per output column) or 4-bit
 * (one scale per group of `groupSize` inputs of each output column, two values per byte),
 * dequantised on the fly in each forward. Symmetric absmax quantisation; the LoRA/DoRA layer
 * on top trains in float32 as in QLoRA.
 */
import * as tf from "@tensorflow/tfjs"
import type { LinearContext, LinearOverride } from "./hook.ts"

export type QuantBits = 8 | 4

export interface QuantizedMatrix {
  readonly bits: QuantBits
  readonly inFeatures: number
  readonly outFeatures: number
  /** int8: group = all inputs of a column; int4: groups of this many inputs. */
  readonly groupSize: number
  /** int8: one value per weight, row-major [in,out]. int4: two per byte (low nibble first), values −7..7 stored +8. */
  readonly data: Int8Array | Uint8Array
  /** [nGroups, out] scales. */
  readonly scales: Float32Array
}

/** Quantise W [in,out] (row-major). */
export const quantize = (w: Float32Array, inFeatures: number, outFeatures: number, bits: QuantBits, groupSize = 32): QuantizedMatrix => {
  if (w.length !== inFeatures * outFeatures) throw new Error(`quantize: ${w.length} values for a [${inFeatures}, ${outFeatures}] matrix`)
  const g = bits === 8 ? inFeatures : Math.min(groupSize, inFeatures)
  const nGroups = Math.ceil(inFeatures / g)
  const qmax = bits === 8 ? 127 : 7
  const scales = new Float32Array(nGroups * outFeatures)
  for (let gi = 0; gi < nGroups; gi++)
    for (let o = 0; o < outFeatures; o++) {
      let m = 0
      for (let i = gi * g; i < Math.min(inFeatures, (gi + 1) * g); i++) m = Math.max(m, Math.abs(w[i * outFeatures + o]!))
      scales[gi * outFeatures + o] = m > 0 ? m / qmax : 1
    }
  const n = inFeatures * outFeatures
  const data = bits === 8 ? new Int8Array(n) : new Uint8Array(Math.ceil(n / 2))
  for (let i = 0; i < inFeatures; i++) {
    const gi = Math.floor(i / g)
    for (let o = 0; o < outFeatures; o++) {
      const k = i * outFeatures + o
      const q = Math.max(-qmax, Math.min(qmax, Math.round(w[k]! / scales[gi * outFeatures + o]!)))
      if (bits === 8) (data as Int8Array)[k] = q
      else (data as Uint8Array)[k >> 1] |= (q + 8) << ((k & 1) * 4)
    }
  }
  return { bits, inFeatures, outFeatures, groupSize: g, data, scales }
}

export const dequantize = (q: QuantizedMatrix): Float32Array => {
  const { inFeatures: I, outFeatures: O, groupSize: g } = q
  const out = new Float32Array(I * O)
  for (let i = 0; i < I; i++) {
    const srow = Math.floor(i / g) * O
    for (let o = 0; o < O; o++) {
      const k = i * O + o
      const v = q.bits === 8 ? (q.data as Int8Array)[k]! : (((q.data as Uint8Array)[k >> 1]! >> ((k & 1) * 4)) & 15) - 8
      out[k] = v * q.scales[srow + o]!
    }
  }
  return out
}

/** Bytes the quantised matrix holds (data + scales). */
export const quantizedBytes = (q: QuantizedMatrix): number => q.data.byteLength + q.scales.byteLength

/**
 * A linear override whose base weight comes from a quantised matrix, dequantised in each
 * forward; `inner` (a LoRA/DoRA layer) sees the dequantised weight as its base.
 */
export class QuantizedLinear implements LinearOverride {
  constructor(
    readonly q: QuantizedMatrix,
    public inner: LinearOverride | undefined,
  ) {}

  forward(x: tf.Tensor2D, ctx: LinearContext): tf.Tensor2D {
    const w = tf.tensor2d(dequantize(this.q), [this.q.inFeatures, this.q.outFeatures]) // [in, out]
    const base = (z: tf.Tensor2D) => (ctx.bias ? (tf.add(tf.matMul(z, w), ctx.bias) as tf.Tensor2D) : (tf.matMul(z, w) as tf.Tensor2D))
    const qctx: LinearContext = { weight: w, ...(ctx.bias ? { bias: ctx.bias } : {}), base }
    return this.inner ? this.inner.forward(x, qctx) : base(x)
  }
}
