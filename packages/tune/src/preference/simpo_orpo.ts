// Reference-free pairwise objectives: SimPO (Meng et al. 2024, TRL's CPOTrainer loss_type="simpo")
// and ORPO (Hong et al. 2024, TRL's ORPOTrainer). Both read prompt/chosen/rejected and use
// length-normalised log-probs, so they take per-token log-probs [B,T] with masks [B,T].
import * as tf from "@tensorflow/tfjs"
import { makeConfig, nonNegative, positive, trainingDefaults, type TrainingArgs } from "./config.ts"
import { rewardMetrics, type LossOutput } from "./dpo.ts"
import { logSigmoid, mean, sequenceLogps } from "./ops.ts"

/** Per-token log-probs of the chosen and rejected completions and their masks (1 on completion tokens). */
export interface PairTokenLogps {
  chosenLogps: tf.Tensor2D // [B,Tc]
  chosenMask: tf.Tensor2D // [B,Tc]
  rejectedLogps: tf.Tensor2D // [B,Tr]
  rejectedMask: tf.Tensor2D // [B,Tr]
}

/** Mean NLL over every chosen completion token in the batch (token-level cross-entropy, as TRL's ORPO/CPO). */
export function chosenNll(chosenLogps: tf.Tensor2D, chosenMask: tf.Tensor2D): tf.Scalar {
  return tf.neg(tf.div(tf.sum(tf.mul(chosenLogps, chosenMask)), tf.sum(chosenMask))) as tf.Scalar
}

export interface SimPOConfig extends TrainingArgs {
  /** Scale of the length-normalised reward (SimPO paper: 2.0–2.5). */
  beta: number
  /** Target reward margin γ (TRL `simpo_gamma`); the loss uses γ/β inside the sigmoid. */
  gamma: number
  labelSmoothing: number
  /** Weight of an extra NLL term on the chosen completion (TRL `cpo_alpha`; 0 = pure SimPO). */
  sftWeight: number
}

export function simpoConfig(given?: Partial<SimPOConfig>): SimPOConfig {
  return makeConfig<SimPOConfig>(
    "SimPOConfig",
    { ...trainingDefaults, beta: 2.0, gamma: 0.5, labelSmoothing: 0, sftWeight: 0 },
    {
      beta: positive,
      gamma: nonNegative,
      labelSmoothing: (v) => nonNegative(v) ?? (v < 0.5 ? undefined : `must be < 0.5, got ${v}`),
      sftWeight: nonNegative,
    },
    given,
  )
}

/**
 * SimPO: with mean log-probs r_w, r_l of the chosen and rejected completions and h = r_w − r_l − γ/β,
 *   loss = mean(−(1−ε)·log σ(βh) − ε·log σ(−βh)) + sftWeight·NLL(chosen)
 * Rewards: β·r_w and β·r_l.
 */
export function simpoLoss(input: PairTokenLogps, config: Pick<SimPOConfig, "beta" | "gamma" | "labelSmoothing" | "sftWeight">): LossOutput {
  const { beta, gamma, labelSmoothing: eps, sftWeight } = config
  const rw = sequenceLogps(input.chosenLogps, input.chosenMask, true) // [B]
  const rl = sequenceLogps(input.rejectedLogps, input.rejectedMask, true) // [B]
  const h = tf.sub(tf.sub(rw, rl), gamma / beta)
  const bh = tf.mul(h, beta)
  const losses = tf.sub(tf.mul(logSigmoid(bh), -(1 - eps)), tf.mul(logSigmoid(tf.neg(bh)), eps)) as tf.Tensor1D
  let loss = mean(losses)
  const metrics = rewardMetrics(tf.mul(rw, beta), tf.mul(rl, beta), rw, rl)
  if (sftWeight > 0) {
    const nll = chosenNll(input.chosenLogps, input.chosenMask)
    loss = tf.add(loss, tf.mul(nll, sftWeight)) as tf.Scalar
    metrics["nll_loss"] = nll
  }
  return { loss, losses, metrics }
}

export interface ORPOConfig extends TrainingArgs {
  /** λ, the weight of the odds-ratio term (TRL `beta`). */
  beta: number
}

export function orpoConfig(given?: Partial<ORPOConfig>): ORPOConfig {
  return makeConfig<ORPOConfig>("ORPOConfig", { ...trainingDefaults, beta: 0.1 }, { beta: positive }, given)
}

/**
 * ORPO: with mean log-probs r_w, r_l (so odds = p/(1−p) with p = exp(r)),
 *   log_odds = (r_w − r_l) − (log(1 − e^{r_w}) − log(1 − e^{r_l}))
 *   loss = NLL(chosen) − λ·mean(log σ(log_odds))
 * Rewards: λ·r_w and λ·r_l; also logs log_odds_ratio = mean log σ(log_odds), log_odds_chosen = mean log_odds, nll_loss.
 */
export function orpoLoss(input: PairTokenLogps, config: Pick<ORPOConfig, "beta">): LossOutput {
  const { beta } = config
  const rw = sequenceLogps(input.chosenLogps, input.chosenMask, true) // [B]
  const rl = sequenceLogps(input.rejectedLogps, input.rejectedMask, true) // [B]
  const logOdds = tf.sub(tf.sub(rw, rl), tf.sub(tf.log1p(tf.neg(tf.exp(rw))), tf.log1p(tf.neg(tf.exp(rl))))) // [B]
  const ratio = logSigmoid(logOdds) // [B]
  const nll = chosenNll(input.chosenLogps, input.chosenMask)
  const losses = tf.sub(nll, tf.mul(ratio, beta)) as tf.Tensor1D // per-pair: NLL(batch) − λ·log σ(log_odds)
  const loss = tf.sub(nll, tf.mul(mean(ratio), beta)) as tf.Scalar
  const metrics = rewardMetrics(tf.mul(rw, beta), tf.mul(rl, beta), rw, rl)
  metrics["log_odds_ratio"] = mean(ratio)
  metrics["log_odds_chosen"] = mean(logOdds)
  metrics["nll_loss"] = nll
  return { loss, losses, metrics }
}
