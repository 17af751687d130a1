// Kahneman-Tversky Optimization (Ethayarajh et al. 2024), TRL's KTOTrainer `kto_loss`.
// Reads the unpaired prompt/completion/label shape. Inputs are per-sequence (summed) log-probs.
import * as tf from "@tensorflow/tfjs"
import { makeConfig, oneOf, positive, trainingDefaults, type TrainingArgs } from "./config.ts"
import type { LossOutput } from "./dpo.ts"
import { mean, stopGradient } from "./ops.ts"

export type KTOLossType = "kto" | "apo_zero_unpaired"

export interface KTOConfig extends TrainingArgs {
  beta: number
  /** Weight of the losses of desirable (label = true) completions. */
  desirableWeight: number
  /** Weight of the losses of undesirable (label = false) completions. */
  undesirableWeight: number
  lossType: KTOLossType
}

export function ktoConfig(given?: Partial<KTOConfig>): KTOConfig {
  return makeConfig<KTOConfig>(
    "KTOConfig",
    { ...trainingDefaults, batchSize: 8, beta: 0.1, desirableWeight: 1, undesirableWeight: 1, lossType: "kto" },
    {
      beta: positive,
      desirableWeight: positive,
      undesirableWeight: positive,
      lossType: oneOf<KTOLossType>("kto", "apo_zero_unpaired"),
      batchSize: (v) => (Number.isInteger(v) && v >= 2 ? undefined : `must be an integer ≥ 2 (KTO estimates its KL term from mismatched pairs inside a batch), got ${v}`),
    },
    given,
  )
}

export interface KTOLossInput {
  policyLogps: tf.Tensor1D // [N] log π(y_i | x_i)
  refLogps: tf.Tensor1D // [N]
  /** 1 for desirable, 0 for undesirable completions. */
  labels: tf.Tensor1D // [N]
  /** Log-probs of mismatched pairs (x_i, y_{i−1}) under the policy and the reference, for the KL estimate. */
  policyKLLogps?: tf.Tensor1D // [M]
  refKLLogps?: tf.Tensor1D // [M]
}

/**
 * KTO: z = max(0, mean(log π(y'|x) − log π_ref(y'|x))) over mismatched pairs, detached; r = log π(y|x) − log π_ref(y|x)
 *   desirable:   w_d·(1 − σ(β(r − z)))
 *   undesirable: w_u·(1 − σ(β(z − r)))
 * loss = mean over all N examples. "apo_zero_unpaired" drops z: 1 − σ(βr) and σ(βr).
 * Rewards: β·r. Without KL inputs z = 0.
 */
export function ktoLoss(input: KTOLossInput, config: Pick<KTOConfig, "beta" | "desirableWeight" | "undesirableWeight" | "lossType">): LossOutput {
  const { beta, desirableWeight, undesirableWeight, lossType } = config
  const y = input.labels
  const notY = tf.sub(1, y)
  let kl: tf.Scalar = tf.scalar(0)
  if (lossType === "kto" && input.policyKLLogps !== undefined && input.refKLLogps !== undefined)
    kl = stopGradient(tf.maximum(mean(tf.sub(input.policyKLLogps, input.refKLLogps)), 0) as tf.Scalar)
  const logratios = tf.sub(input.policyLogps, input.refLogps) // [N]
  let chosenLosses: tf.Tensor, rejectedLosses: tf.Tensor
  if (lossType === "kto") {
    chosenLosses = tf.sub(1, tf.sigmoid(tf.mul(tf.sub(logratios, kl), beta)))
    rejectedLosses = tf.sub(1, tf.sigmoid(tf.mul(tf.sub(kl, logratios), beta)))
  } else {
    chosenLosses = tf.sub(1, tf.sigmoid(tf.mul(logratios, beta)))
    rejectedLosses = tf.sigmoid(tf.mul(logratios, beta))
  }
  const losses = tf.add(tf.mul(tf.mul(chosenLosses, y), desirableWeight), tf.mul(tf.mul(rejectedLosses, notY), undesirableWeight)) as tf.Tensor1D
  const rewards = tf.mul(logratios, beta)
  const metrics: Record<string, tf.Scalar> = { kl }
  const nChosen = tf.sum(y)
  const nRejected = tf.sum(notY)
  const labels = y.dataSync()
  const hasChosen = labels.some((v) => v > 0.5)
  const hasRejected = labels.some((v) => v < 0.5)
  if (hasChosen) {
    metrics["rewards/chosen"] = tf.div(tf.sum(tf.mul(rewards, y)), nChosen) as tf.Scalar
    metrics["logps/chosen"] = tf.div(tf.sum(tf.mul(input.policyLogps, y)), nChosen) as tf.Scalar
  }
  if (hasRejected) {
    metrics["rewards/rejected"] = tf.div(tf.sum(tf.mul(rewards, notY)), nRejected) as tf.Scalar
    metrics["logps/rejected"] = tf.div(tf.sum(tf.mul(input.policyLogps, notY)), nRejected) as tf.Scalar
  }
  if (hasChosen && hasRejected) metrics["rewards/margins"] = tf.sub(metrics["rewards/chosen"], metrics["rewards/rejected"]) as tf.Scalar
  return { loss: mean(losses), losses, metrics }
}

/**
 * Indices of the mismatched pairs TRL uses for the KL estimate: completion i−1 with prompt i
 * (completions rotated by +1 inside the batch, `_get_kl_dataset`).
 */
export function klMismatchIndices(n: number): number[] {
  return Array.from({ length: n }, (_, i) => (i + n - 1) % n)
}
