// Proximal Policy Optimization for language models (Ouyang et al. 2022), TRL's PPOTrainer:
// per-token rewards with a KL-to-reference penalty and the score on the last token, GAE,
// the clipped policy surrogate and a clipped value loss. Reads the prompt-only shape.
import * as tf from "@tensorflow/tfjs"
import { isBoolean, makeConfig, nonNegative, oneOf, positive, positiveInt, trainingDefaults, type TrainingArgs } from "./config.ts"
import type { LossOutput } from "./dpo.ts"
import { maskedMean, maskedWhiten, mean } from "./ops.ts"

export type KLEstimator = "k1" | "k3"

export interface PPOConfig extends TrainingArgs {
  /** Coefficient of the per-token KL penalty in the reward. */
  klCoef: number
  /** k1: log π − log π_ref; k3: (r − 1) − log r with r = π_ref/π (unbiased, ≥ 0). */
  klEstimator: KLEstimator
  /** Policy ratio clip ε. */
  cliprange: number
  /** Value prediction clip around the old values. */
  cliprangeValue: number
  /** Weight of the value loss. */
  vfCoef: number
  /** Discount γ. */
  gamma: number
  /** GAE λ. */
  lam: number
  /** Whiten the per-token rewards before GAE (keeps their mean). */
  whitenRewards: boolean
  /** Optimisation passes over each batch of rollouts. */
  numPpoEpochs: number
  temperature: number
  maxCompletionLength: number
}

export function ppoConfig(given?: Partial<PPOConfig>): PPOConfig {
  return makeConfig<PPOConfig>(
    "PPOConfig",
    {
      ...trainingDefaults,
      klCoef: 0.05,
      klEstimator: "k1",
      cliprange: 0.2,
      cliprangeValue: 0.2,
      vfCoef: 0.1,
      gamma: 1.0,
      lam: 0.95,
      whitenRewards: false,
      numPpoEpochs: 4,
      temperature: 1.0,
      maxCompletionLength: 16,
    },
    {
      klCoef: nonNegative,
      klEstimator: oneOf<KLEstimator>("k1", "k3"),
      cliprange: (v) => positive(v) ?? (v < 1 ? undefined : `must be < 1, got ${v}`),
      cliprangeValue: positive,
      vfCoef: nonNegative,
      gamma: (v) => (Number.isFinite(v) && v >= 0 && v <= 1 ? undefined : `must be in [0, 1], got ${v}`),
      lam: (v) => (Number.isFinite(v) && v >= 0 && v <= 1 ? undefined : `must be in [0, 1], got ${v}`),
      whitenRewards: isBoolean,
      numPpoEpochs: positiveInt,
      temperature: positive,
      maxCompletionLength: positiveInt,
    },
    given,
  )
}

export interface PPORewards {
  rewards: tf.Tensor2D // [B,T] per-token reward, 0 outside the mask
  kl: tf.Tensor2D // [B,T] per-token KL estimate, 0 outside the mask
  metrics: Record<string, tf.Scalar>
}

/**
 * Per-token rewards: r_t = −klCoef·kl_t, plus the sequence score on the last completion token.
 * Metrics: objective/kl (mean summed KL), objective/non_score_reward, objective/scores, objective/rlhf_reward.
 */
export function ppoRewards(
  input: { logps: tf.Tensor2D; refLogps: tf.Tensor2D; mask: tf.Tensor2D; scores: tf.Tensor1D },
  config: Pick<PPOConfig, "klCoef" | "klEstimator">,
): PPORewards {
  const { logps, refLogps, mask, scores } = input
  const logr = tf.sub(refLogps, logps)
  const klRaw = config.klEstimator === "k1" ? tf.neg(logr) : tf.sub(tf.sub(tf.exp(logr), 1), logr)
  const kl = tf.mul(klRaw, mask) as tf.Tensor2D
  const nonScore = tf.mul(kl, -config.klCoef)
  // one-hot of the last masked position per row: mask[t] − mask[t+1]
  const T = mask.shape[1]
  const nextMask = tf.concat([tf.slice(mask, [0, 1], [-1, T - 1]), tf.zeros([mask.shape[0], 1])], 1)
  const last = tf.relu(tf.sub(mask, nextMask)) // [B,T]
  const rewards = tf.add(nonScore, tf.mul(last, tf.expandDims(scores, 1))) as tf.Tensor2D
  const nonScoreSum = tf.sum(nonScore, 1)
  return {
    rewards,
    kl,
    metrics: {
      "objective/kl": mean(tf.sum(kl, 1)),
      "objective/non_score_reward": mean(nonScoreSum),
      "objective/scores": mean(scores),
      "objective/rlhf_reward": mean(tf.add(nonScoreSum, scores)),
    },
  }
}

/**
 * Generalised advantage estimation over per-token rewards and values [B,T] (zeroed outside the mask):
 *   δ_t = r_t + γ·V_{t+1} − V_t,  A_t = δ_t + γλ·A_{t+1},  returns = A + V,
 * then advantages are whitened over the mask (TRL `masked_whiten`) and zeroed outside it.
 */
export function gae(
  input: { rewards: tf.Tensor2D; values: tf.Tensor2D; mask: tf.Tensor2D },
  config: Pick<PPOConfig, "gamma" | "lam"> & { whitenRewards?: boolean },
): { advantages: tf.Tensor2D; returns: tf.Tensor2D } {
  return tf.tidy(() => {
    const { mask } = input
    let rewards = tf.mul(input.rewards, mask)
    if (config.whitenRewards) rewards = tf.mul(maskedWhiten(rewards, mask, false), mask)
    const values = tf.mul(input.values, mask)
    const T = mask.shape[1]
    const r = tf.unstack(rewards, 1) // T × [B]
    const v = tf.unstack(values, 1)
    const out: tf.Tensor[] = new Array(T)
    let lastgaelam: tf.Tensor = tf.zerosLike(r[0])
    for (let t = T - 1; t >= 0; t--) {
      const nextValues = t < T - 1 ? v[t + 1] : tf.zerosLike(v[t])
      const delta = tf.sub(tf.add(r[t], tf.mul(nextValues, config.gamma)), v[t])
      lastgaelam = tf.add(delta, tf.mul(lastgaelam, config.gamma * config.lam))
      out[t] = lastgaelam
    }
    const adv = tf.stack(out, 1) // [B,T]
    const returns = tf.add(adv, values) as tf.Tensor2D
    const advantages = tf.mul(maskedWhiten(adv, mask), mask) as tf.Tensor2D
    return { advantages, returns }
  })
}

export interface PPOLossInput {
  logps: tf.Tensor2D // [B,T] new per-token log-probs
  oldLogps: tf.Tensor2D // [B,T] at rollout time
  advantages: tf.Tensor2D // [B,T]
  mask: tf.Tensor2D // [B,T]
  values: tf.Tensor2D // [B,T] new value predictions
  oldValues: tf.Tensor2D // [B,T] at rollout time
  returns: tf.Tensor2D // [B,T]
}

/**
 * PPO loss: ρ = exp(logps − oldLogps),
 *   pg = masked_mean(max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)))
 *   vf = ½·masked_mean(max((V − R)², (clip(V, V_old − c, V_old + c) − R)²))
 *   loss = pg + vfCoef·vf
 * Metrics: loss/policy_avg, loss/value_avg, policy/clipfrac_avg, val/clipfrac_avg, policy/approxkl_avg (masked ½·mean((logps − old)²)).
 */
export function ppoLoss(input: PPOLossInput, config: Pick<PPOConfig, "cliprange" | "cliprangeValue" | "vfCoef">): LossOutput {
  const { logps, oldLogps, advantages: A, mask, values, oldValues, returns } = input
  const { cliprange, cliprangeValue, vfCoef } = config
  const diff = tf.sub(logps, oldLogps)
  const ratio = tf.exp(diff)
  const pg1 = tf.mul(tf.neg(A), ratio)
  const pg2 = tf.mul(tf.neg(A), tf.clipByValue(ratio, 1 - cliprange, 1 + cliprange))
  const pgPerToken = tf.maximum(pg1, pg2)
  const pgLoss = maskedMean(pgPerToken, mask) as tf.Scalar
  const vClipped = tf.minimum(tf.maximum(values, tf.sub(oldValues, cliprangeValue)), tf.add(oldValues, cliprangeValue))
  const vf1 = tf.square(tf.sub(values, returns))
  const vf2 = tf.square(tf.sub(vClipped, returns))
  const vfLoss = tf.mul(maskedMean(tf.maximum(vf1, vf2), mask), 0.5) as tf.Scalar
  const loss = tf.add(pgLoss, tf.mul(vfLoss, vfCoef)) as tf.Scalar
  const losses = tf.add(
    tf.div(tf.sum(tf.mul(pgPerToken, mask), 1), tf.sum(mask, 1)),
    tf.mul(tf.div(tf.sum(tf.mul(tf.maximum(vf1, vf2), mask), 1), tf.sum(mask, 1)), 0.5 * vfCoef),
  ) as tf.Tensor1D
  return {
    loss,
    losses,
    metrics: {
      "loss/policy_avg": pgLoss,
      "loss/value_avg": vfLoss,
      "policy/clipfrac_avg": maskedMean(tf.cast(tf.greater(pg2, pg1), "float32"), mask) as tf.Scalar,
      "val/clipfrac_avg": maskedMean(tf.cast(tf.greater(vf2, vf1), "float32"), mask) as tf.Scalar,
      "policy/approxkl_avg": tf.mul(maskedMean(tf.square(diff), mask), 0.5) as tf.Scalar,
    },
  }
}
