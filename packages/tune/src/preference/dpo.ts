// Direct Preference Optimization (Rafailov et al. 2023) and its TRL loss types.
// Reads the prompt/chosen/rejected dataset shape. Inputs are per-sequence log-probs [B].
import * as tf from "@tensorflow/tfjs"
import { makeConfig, nonNegative, oneOf, positive, trainingDefaults, type TrainingArgs } from "./config.ts"
import { logSigmoid, mean } from "./ops.ts"

export type DPOLossType = "sigmoid" | "ipo" | "hinge" | "robust"

export interface DPOConfig extends TrainingArgs {
  /** Temperature of the implicit reward β·log(π/π_ref); higher stays closer to the reference. */
  beta: number
  lossType: DPOLossType
  /** Probability that a pair's label is flipped (cDPO for "sigmoid", rDPO for "robust"); 0..0.5. */
  labelSmoothing: number
  /** Drop the reference (π_ref = uniform): logits = log π(y_w) − log π(y_l). */
  referenceFree: boolean
  /**
   * Weight of the chosen answers' token NLL added to the loss (TRL's rpo_alpha; Pang et al. 2024,
   * "Iterative Reasoning Preference Optimization"). 0 = plain DPO. Without it DPO can lower the
   * chosen answers' likelihood along with the rejected ones' (their tokens are mostly shared).
   */
  rpoAlpha: number
}

export function dpoConfig(given?: Partial<DPOConfig>): DPOConfig {
  return makeConfig<DPOConfig>(
    "DPOConfig",
    { ...trainingDefaults, beta: 0.1, lossType: "sigmoid", labelSmoothing: 0, referenceFree: false, rpoAlpha: 0 },
    {
      beta: positive,
      lossType: oneOf<DPOLossType>("sigmoid", "ipo", "hinge", "robust"),
      labelSmoothing: (v, c) => {
        const bad = nonNegative(v)
        if (bad) return bad
        if (v >= 0.5) return `must be < 0.5 (it is the probability that a label is wrong), got ${v}`
        if (v > 0 && c.lossType !== "sigmoid" && c.lossType !== "robust")
          return `only applies to lossType "sigmoid" or "robust", not ${JSON.stringify(c.lossType)}; set it to 0`
        return undefined
      },
      referenceFree: (v) => (typeof v === "boolean" ? undefined : `must be true or false, got ${JSON.stringify(v)}`),
      rpoAlpha: nonNegative,
    },
    given,
  )
}

export interface DPOLossInput {
  policyChosenLogps: tf.Tensor1D // [B]
  policyRejectedLogps: tf.Tensor1D // [B]
  refChosenLogps: tf.Tensor1D // [B]
  refRejectedLogps: tf.Tensor1D // [B]
  /** Mean token NLL of the chosen completions (needed when rpoAlpha > 0). */
  chosenNll?: tf.Scalar
}

export interface LossOutput {
  /** The scalar to minimise. */
  loss: tf.Scalar
  /** Per-example losses before the mean. */
  losses: tf.Tensor1D
  /** Scalars TRL logs under the same names (rewards/chosen, rewards/margins, ...). */
  metrics: Record<string, tf.Scalar>
}

/**
 * DPO loss, TRL's `dpo_loss`. With h = (log π(y_w) − log π(y_l)) − (log π_ref(y_w) − log π_ref(y_l)) and ε = labelSmoothing:
 *   sigmoid: −(1−ε)·log σ(βh) − ε·log σ(−βh)
 *   robust:  (−(1−ε)·log σ(βh) + ε·log σ(−βh)) / (1 − 2ε)
 *   hinge:   max(0, 1 − βh)
 *   ipo:     (h − 1/(2β))²   (TRL feeds IPO length-averaged log-probs; the trainer does that)
 * Rewards: β·(log π − log π_ref) for chosen and rejected. With rpoAlpha > 0 the loss adds
 * rpoAlpha · chosenNll (TRL: loss = dpo_loss + rpo_alpha · nll_loss).
 */
export function dpoLoss(
  input: DPOLossInput,
  config: Pick<DPOConfig, "beta" | "lossType" | "labelSmoothing"> & { referenceFree?: boolean; rpoAlpha?: number },
): LossOutput {
  const { beta, lossType, labelSmoothing: eps } = config
  const piLogratios = tf.sub(input.policyChosenLogps, input.policyRejectedLogps)
  const refLogratios = config.referenceFree ? tf.scalar(0) : tf.sub(input.refChosenLogps, input.refRejectedLogps)
  const h = tf.sub(piLogratios, refLogratios) as tf.Tensor1D // [B]
  const bh = tf.mul(h, beta)
  let losses: tf.Tensor
  switch (lossType) {
    case "sigmoid":
      losses = tf.sub(tf.mul(logSigmoid(bh), -(1 - eps)), tf.mul(logSigmoid(tf.neg(bh)), eps))
      break
    case "robust":
      losses = tf.div(tf.add(tf.mul(logSigmoid(bh), -(1 - eps)), tf.mul(logSigmoid(tf.neg(bh)), eps)), 1 - 2 * eps)
      break
    case "hinge":
      losses = tf.relu(tf.sub(1, bh))
      break
    case "ipo":
      losses = tf.square(tf.sub(h, 1 / (2 * beta)))
      break
    default:
      throw new Error(`dpoLoss: unknown lossType ${JSON.stringify(lossType)}; use sigmoid, ipo, hinge or robust`)
  }
  const chosenRewards = tf.mul(tf.sub(input.policyChosenLogps, input.refChosenLogps), beta)
  const rejectedRewards = tf.mul(tf.sub(input.policyRejectedLogps, input.refRejectedLogps), beta)
  const metrics = rewardMetrics(chosenRewards, rejectedRewards, input.policyChosenLogps, input.policyRejectedLogps)
  const alpha = config.rpoAlpha ?? 0
  if (alpha > 0 && input.chosenNll === undefined) throw new Error("dpoLoss: rpoAlpha > 0 needs chosenNll (the chosen completions' mean token NLL)")
  const loss = alpha > 0 ? tf.add(mean(losses), tf.mul(input.chosenNll!, alpha)) : mean(losses)
  if (alpha > 0) metrics.nll_loss = input.chosenNll!
  return { loss: loss as tf.Scalar, losses: losses as tf.Tensor1D, metrics }
}

/** rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins, logps/chosen, logps/rejected. */
export function rewardMetrics(
  chosenRewards: tf.Tensor,
  rejectedRewards: tf.Tensor,
  chosenLogps: tf.Tensor,
  rejectedLogps: tf.Tensor,
): Record<string, tf.Scalar> {
  return {
    "rewards/chosen": mean(chosenRewards),
    "rewards/rejected": mean(rejectedRewards),
    "rewards/accuracies": mean(tf.cast(tf.greater(chosenRewards, rejectedRewards), "float32")),
    "rewards/margins": mean(tf.sub(chosenRewards, rejectedRewards)),
    "logps/chosen": mean(chosenLogps),
    "logps/rejected": mean(rejectedLogps),
  }
}
