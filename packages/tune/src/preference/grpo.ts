// Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath), TRL's GRPOTrainer.
// Reads the prompt-only shape: numGenerations completions per prompt are sampled, scored by reward
// functions and compared inside their group. Inputs are per-token log-probs [B,T] with a mask.
import * as tf from "@tensorflow/tfjs"
import { isBoolean, makeConfig, nonNegative, oneOf, positive, positiveInt, trainingDefaults, type TrainingArgs } from "./config.ts"
import type { LossOutput } from "./dpo.ts"
import { maskedMean, mean, stopGradient } from "./ops.ts"

export type GRPOLossType = "grpo" | "bnpo" | "dr_grpo"

export interface GRPOConfig extends TrainingArgs {
  /** Completions sampled per prompt (the group); ≥ 2 so the group has a spread. batchSize counts prompts. */
  numGenerations: number
  /** Lower clip ε: the ratio is clipped to [1 − epsilon, 1 + epsilonHigh]. */
  epsilon: number
  /** Upper clip (DAPO's ε_high); defaults to epsilon. */
  epsilonHigh: number
  /** KL coefficient to the reference (k3 estimator); 0 = no reference needed. */
  beta: number
  /** How per-token losses are averaged: per sequence then batch (grpo), over all tokens (bnpo), or over B·maxCompletionLength (dr_grpo). */
  lossType: GRPOLossType
  /** Divide advantages by the group's standard deviation (+1e-4); false = Dr. GRPO's unscaled advantages. */
  scaleRewards: boolean
  /** Sampling temperature for the generations. */
  temperature: number
  /** Most tokens generated per completion. */
  maxCompletionLength: number
  /** Optimizer steps per generated batch (μ in the paper); > 1 makes the clipped ratio matter. */
  numIterations: number
  /** Weights of the reward functions when several are given (TRL `reward_weights`); [] = 1 each. */
  rewardWeights: number[]
}

export function grpoConfig(given?: Partial<GRPOConfig>): GRPOConfig {
  const epsilon = given?.epsilon ?? 0.2
  return makeConfig<GRPOConfig>(
    "GRPOConfig",
    {
      ...trainingDefaults,
      batchSize: 4,
      numGenerations: 8,
      epsilon,
      epsilonHigh: epsilon,
      beta: 0.0,
      lossType: "grpo",
      scaleRewards: true,
      temperature: 1.0,
      maxCompletionLength: 16,
      numIterations: 1,
      rewardWeights: [],
    },
    {
      numGenerations: (v) =>
        Number.isInteger(v) && v >= 2 ? undefined : `must be an integer ≥ 2 (advantages compare completions inside a group), got ${v}`,
      epsilon: (v) => positive(v) ?? (v < 1 ? undefined : `must be < 1 (the ratio is clipped to [1 − ε, 1 + ε_high]), got ${v}`),
      epsilonHigh: positive,
      beta: nonNegative,
      lossType: oneOf<GRPOLossType>("grpo", "bnpo", "dr_grpo"),
      scaleRewards: isBoolean,
      temperature: positive,
      maxCompletionLength: positiveInt,
      numIterations: positiveInt,
      rewardWeights: (v) =>
        Array.isArray(v) && v.every((w) => typeof w === "number" && Number.isFinite(w)) ? undefined : `must be an array of finite numbers, got ${JSON.stringify(v)}`,
    },
    given,
  )
}

export interface GroupAdvantages {
  advantages: tf.Tensor1D // [B]
  metrics: Record<string, tf.Scalar>
}

/**
 * Group-normalised advantages: rewards [B] in consecutive groups of G = numGenerations,
 *   A_i = (r_i − mean_group) / (std_group + 1e-4)   (std unbiased, as torch.std); without scaling A_i = r_i − mean_group.
 * Metrics: reward, reward_std (mean group std), frac_reward_zero_std.
 */
export function groupAdvantages(rewards: tf.Tensor1D, numGenerations: number, scaleRewards = true): GroupAdvantages {
  const B = rewards.shape[0]
  if (B % numGenerations !== 0)
    throw new Error(`groupAdvantages: ${B} rewards do not split into groups of numGenerations=${numGenerations}; pass whole groups`)
  const G = numGenerations
  const grouped = tf.reshape(rewards, [B / G, G]) // [P,G]
  const groupMean = tf.mean(grouped, 1, true) // [P,1]
  const groupStd = tf.sqrt(tf.div(tf.sum(tf.square(tf.sub(grouped, groupMean)), 1, true), G - 1)) // [P,1]
  let adv = tf.sub(grouped, groupMean)
  if (scaleRewards) adv = tf.div(adv, tf.add(groupStd, 1e-4))
  return {
    advantages: tf.reshape(adv, [B]) as tf.Tensor1D,
    metrics: {
      reward: mean(rewards),
      reward_std: mean(groupStd),
      frac_reward_zero_std: mean(tf.cast(tf.lessEqual(tf.abs(groupStd), 1e-8), "float32")),
    },
  }
}

export interface GRPOLossInput {
  logps: tf.Tensor2D // [B,T] per-token log π_θ of the sampled completions
  /** Log-probs at sampling time; omitted = logps detached (numIterations = 1, ratio ≡ 1 with the policy gradient). */
  oldLogps?: tf.Tensor2D // [B,T]
  /** Reference per-token log-probs; needed when beta > 0. */
  refLogps?: tf.Tensor2D // [B,T]
  mask: tf.Tensor2D // [B,T] 1 on completion tokens
  advantages: tf.Tensor1D // [B]
}

/**
 * GRPO loss, TRL's `compute_loss`: ρ = exp(logps − oldLogps),
 *   ℓ_t = −min(ρ·A, clip(ρ, 1−ε, 1+ε_high)·A) + β·(exp(ref − logps) − (ref − logps) − 1)
 * averaged over masked tokens per `lossType`. Metrics: kl, clip_ratio/low_mean, clip_ratio/high_mean, clip_ratio/region_mean.
 */
export function grpoLoss(
  input: GRPOLossInput,
  config: Pick<GRPOConfig, "epsilon" | "epsilonHigh" | "beta" | "lossType" | "maxCompletionLength">,
): LossOutput {
  const { epsilon, epsilonHigh, beta, lossType } = config
  const { logps, mask } = input
  const old = input.oldLogps ?? stopGradient(logps)
  const adv = tf.expandDims(input.advantages, 1) // [B,1]
  const coef1 = tf.exp(tf.sub(logps, old)) // [B,T]
  const coef2 = tf.clipByValue(coef1, 1 - epsilon, 1 + epsilonHigh)
  let perToken = tf.neg(tf.minimum(tf.mul(coef1, adv), tf.mul(coef2, adv))) // [B,T]
  const metrics: Record<string, tf.Scalar> = {}
  if (beta !== 0) {
    if (input.refLogps === undefined) throw new Error("grpoLoss: beta > 0 needs refLogps (per-token reference log-probs); pass them or set beta to 0")
    const d = tf.sub(input.refLogps, logps)
    const kl = tf.sub(tf.sub(tf.exp(d), d), 1) // k3, ≥ 0
    perToken = tf.add(perToken, tf.mul(kl, beta))
    metrics["kl"] = mean(maskedMean(kl, mask, 1))
  }
  const B = logps.shape[0]
  let loss: tf.Scalar
  let losses: tf.Tensor1D
  const seqSum = tf.sum(tf.mul(perToken, mask), 1) // [B]
  if (lossType === "grpo") {
    losses = tf.div(seqSum, tf.maximum(tf.sum(mask, 1), 1)) as tf.Tensor1D
    loss = mean(losses)
  } else if (lossType === "bnpo") {
    losses = seqSum as tf.Tensor1D
    loss = tf.div(tf.sum(seqSum), tf.maximum(tf.sum(mask), 1)) as tf.Scalar
  } else {
    losses = seqSum as tf.Tensor1D
    loss = tf.div(tf.sum(seqSum), B * config.maxCompletionLength) as tf.Scalar
  }
  const low = tf.logicalAnd(tf.less(coef1, 1 - epsilon), tf.less(adv, 0))
  const high = tf.logicalAnd(tf.greater(coef1, 1 + epsilonHigh), tf.greater(adv, 0))
  metrics["clip_ratio/low_mean"] = maskedMean(tf.cast(low, "float32"), mask) as tf.Scalar
  metrics["clip_ratio/high_mean"] = maskedMean(tf.cast(high, "float32"), mask) as tf.Scalar
  metrics["clip_ratio/region_mean"] = maskedMean(tf.cast(tf.logicalOr(low, high), "float32"), mask) as tf.Scalar
  return { loss, losses, metrics }
}
