// Small tensor helpers shared by the preference objectives.
// Shapes: B = sequences in the batch, T = completion positions (padded), mask is 1 on real tokens.
import * as tf from "@tensorflow/tfjs"

/** Identity in the forward pass, zero gradient in the backward pass (torch's `.detach()`). */
export function stopGradient<T extends tf.Tensor>(x: T): T {
  const detach = tf.customGrad((a) => ({
    value: (a as tf.Tensor).clone(),
    gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy),
  }))
  return detach(x) as T
}

/** sum(x·mask) / sum(mask), over all elements or along `axis`. */
export function maskedMean(x: tf.Tensor, mask: tf.Tensor, axis?: number): tf.Tensor {
  return tf.tidy(() => tf.div(tf.sum(tf.mul(x, mask), axis), tf.sum(mask, axis)))
}

/** Masked variance; `unbiased` multiplies by n/(n-1) like TRL's `masked_var`. */
export function maskedVar(x: tf.Tensor, mask: tf.Tensor, unbiased = true): tf.Scalar {
  return tf.tidy(() => {
    const mean = maskedMean(x, mask)
    const variance = maskedMean(tf.square(tf.sub(x, mean)), mask)
    if (!unbiased) return variance as tf.Scalar
    const n = tf.sum(mask)
    return tf.mul(variance, tf.div(n, tf.sub(n, 1))) as tf.Scalar
  })
}

/** (x − mean) / sqrt(var + 1e-8) over the masked elements (TRL `masked_whiten`); keeps the mean when shiftMean is false. */
export function maskedWhiten(x: tf.Tensor, mask: tf.Tensor, shiftMean = true): tf.Tensor {
  return tf.tidy(() => {
    const mean = maskedMean(x, mask)
    const variance = maskedVar(x, mask, true)
    const whitened = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, 1e-8)))
    return shiftMean ? whitened : tf.add(whitened, mean)
  })
}

/** Per-sequence log-prob from per-token log-probs [B,T] and mask [B,T]: sum, or mean over real tokens. */
export function sequenceLogps(tokenLogps: tf.Tensor2D, mask: tf.Tensor2D, average = false): tf.Tensor1D {
  return tf.tidy(() => {
    const sum = tf.sum(tf.mul(tokenLogps, mask), 1) // [B]
    return (average ? tf.div(sum, tf.sum(mask, 1)) : sum) as tf.Tensor1D
  })
}

/** Mean of a 1-D tensor as a scalar (for metrics). */
export const mean = (x: tf.Tensor): tf.Scalar => tf.mean(x) as tf.Scalar

/** Read a record of scalar tensors into numbers and dispose them. */
export function readMetrics(metrics: Record<string, tf.Scalar>): Record<string, number> {
  const out: Record<string, number> = {}
  for (const [k, v] of Object.entries(metrics)) {
    out[k] = v.dataSync()[0]
    v.dispose()
  }
  return out
}

/**
 * log σ(x) = −softplus(−x). (tf.logSigmoid's own gradient reads a disposed tensor when taken
 * inside tf.grads + tf.tidy on tfjs 4.22, so we compose it from softplus.)
 */
export const logSigmoid = (x: tf.Tensor): tf.Tensor => tf.neg(tf.softplus(tf.neg(x)))
