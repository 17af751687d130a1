// Single-process preference trainers on a real model: the pairwise family (DPO and its loss types,
// IPO, SimPO, ORPO) through one trainer, KTO, and GRPO with online sampling. Each is a straight
// loop: data → batch → loss → clipped Adam step → metrics. The coordinator's rounds call these.
import * as tf from "@tensorflow/tfjs"
import { PreferenceConfigError } from "./config.ts"
import { dpoConfig, dpoLoss, type DPOConfig, type LossOutput } from "./dpo.ts"
import { groupAdvantages, grpoConfig, grpoLoss, type GroupAdvantages, type GRPOConfig } from "./grpo.ts"
import { ktoConfig, ktoLoss, type KTOConfig } from "./kto.ts"
import { gae, ppoConfig, ppoLoss, ppoRewards, type PPOConfig } from "./ppo.ts"
import { sequenceLogps, stopGradient } from "./ops.ts"
import {
  completionBatch,
  contextOf,
  optimizerStep,
  PreferenceDataError,
  resolveTrainable,
  rng,
  sampleCompletions,
  shuffled,
  tokenLogps,
  type CompletionBatch,
  type PolicyModel,
  type TokenCompletion,
  type TokenLabelled,
  type TokenPair,
} from "./policy.ts"
import { klPairs, precomputeLabelledReference, precomputePairReference, type LabelledReference, type PairReference } from "./reference.ts"
import { orpoConfig, orpoLoss, simpoConfig, simpoLoss, type ORPOConfig, type SimPOConfig } from "./simpo_orpo.ts"

export type PairwiseAlgo = "dpo" | "ipo" | "simpo" | "orpo"

/** A pairwise config tagged with the objective it selects. */
export type PairwiseConfig = ({ algo: "dpo" } & DPOConfig) | ({ algo: "simpo" } & SimPOConfig) | ({ algo: "orpo" } & ORPOConfig)

/** Build and validate the config of a pairwise objective by name ("ipo" = DPO with lossType "ipo"). */
export function pairwiseConfig(algo: PairwiseAlgo, given: Record<string, unknown> = {}): PairwiseConfig {
  switch (algo) {
    case "dpo":
      return { algo: "dpo", ...dpoConfig(given as Partial<DPOConfig>) }
    case "ipo":
      return { algo: "dpo", ...dpoConfig({ lossType: "ipo", ...(given as Partial<DPOConfig>) }) }
    case "simpo":
      return { algo: "simpo", ...simpoConfig(given as Partial<SimPOConfig>) }
    case "orpo":
      return { algo: "orpo", ...orpoConfig(given as Partial<ORPOConfig>) }
    default:
      throw new PreferenceConfigError("pairwiseConfig", "algo", `must be one of "dpo", "ipo", "simpo", "orpo", got ${JSON.stringify(algo)}`)
  }
}

export type PreferenceAlgo = PairwiseAlgo | "kto" | "grpo" | "ppo"
export const PREFERENCE_ALGOS: readonly PreferenceAlgo[] = ["dpo", "ipo", "simpo", "orpo", "kto", "grpo", "ppo"]

/** Any algorithm's config, tagged with its name (what `moa round start --algo …` selects). */
export type PreferenceConfig = PairwiseConfig | ({ algo: "kto" } & KTOConfig) | ({ algo: "grpo" } & GRPOConfig) | ({ algo: "ppo" } & PPOConfig)

/** Build and validate the config of any objective by name. */
export function preferenceConfig(algo: PreferenceAlgo, given: Record<string, unknown> = {}): PreferenceConfig {
  switch (algo) {
    case "kto":
      return { algo: "kto", ...ktoConfig(given as Partial<KTOConfig>) }
    case "grpo":
      return { algo: "grpo", ...grpoConfig(given as Partial<GRPOConfig>) }
    case "ppo":
      return { algo: "ppo", ...ppoConfig(given as Partial<PPOConfig>) }
    case "dpo":
    case "ipo":
    case "simpo":
    case "orpo":
      return pairwiseConfig(algo, given)
    default:
      throw new PreferenceConfigError("preferenceConfig", "algo", `must be one of ${PREFERENCE_ALGOS.join(", ")}, got ${JSON.stringify(algo)}`)
  }
}

/** The TRL dataset shape each objective reads (the names of @moa/tune's data readers). */
export function datasetShapeOf(algo: PreferenceAlgo): "preference" | "unpaired" | "prompt" {
  return algo === "kto" ? "unpaired" : algo === "grpo" || algo === "ppo" ? "prompt" : "preference"
}

export interface TrainOptions {
  /** Called after every optimizer step with the loss and TRL's metrics. */
  onStep?: (step: number, metrics: Record<string, number>) => void
  /** Defaults to Adam at config.learningRate. */
  optimizer?: tf.Optimizer
  /** Folder for the reference log-prob cache (see reference.ts). */
  cacheDir?: string
  /** Stops training between two steps; the result then has `stopped: "aborted"` and the steps done so far. */
  signal?: AbortSignal
}

/** Let the event loop run (NATS pings, replies, timers) between steps; true when asked to stop. */
async function stopRequested(signal: AbortSignal | undefined): Promise<boolean> {
  await new Promise<void>((resolve) => setImmediate(resolve))
  return signal?.aborted === true
}

const stopped = (signal: AbortSignal | undefined): { stopped?: "aborted" } => (signal?.aborted ? { stopped: "aborted" } : {})

export interface TrainResult {
  /** Optimizer steps taken (fewer than planned when stopped). */
  steps: number
  /** Set when options.signal stopped the run early. */
  stopped?: "aborted"
  /** One entry per step: loss, grad_norm and the objective's metrics. */
  history: Record<string, number>[]
  /** Cache key of the reference log-probs used, and whether they came from the cache. */
  reference?: { key: string; fromCache: boolean }
}

function totalSteps(n: number, cfg: { batchSize: number; numEpochs: number; maxSteps: number }): number {
  return cfg.maxSteps > 0 ? cfg.maxSteps : cfg.numEpochs * Math.ceil(n / cfg.batchSize)
}

/** Yields batches of indices: shuffled each epoch, seeded. */
function* batches(n: number, batchSize: number, seed: number): Generator<number[]> {
  const random = rng(seed)
  const all = Array.from({ length: n }, (_, i) => i)
  let order: number[] = []
  for (;;) {
    if (order.length === 0) order = shuffled(all, random)
    yield order.splice(0, batchSize)
  }
}

function checkAll(items: TokenCompletion[], ctx: number | undefined, what: string) {
  // builds and frees each example's batch once, so a bad example fails before any training
  items.forEach((it, i) => {
    try {
      const b = completionBatch([it], ctx, what)
      tf.dispose([b.ids, b.targets, b.mask])
    } catch (e) {
      throw new PreferenceDataError((e as Error).message.replace(`${what} 0`, `${what} ${i}`))
    }
  })
}

/**
 * Train on prompt/chosen/rejected pairs with DPO (any loss type), IPO, SimPO or ORPO, chosen by
 * `config.algo` (a plain DPOConfig means DPO). DPO needs the reference's log-probs: they are computed
 * once from the model as it is when training starts (and cached under options.cacheDir), unless
 * `options.reference` gives them.
 */
export async function trainDPO(
  model: PolicyModel,
  pairs: TokenPair[],
  config: PairwiseConfig | DPOConfig,
  trainableVars?: tf.Variable[],
  options: TrainOptions & { reference?: PairReference[] } = {},
): Promise<TrainResult> {
  const cfg: PairwiseConfig = "algo" in config ? (config as PairwiseConfig) : { algo: "dpo", ...config }
  if (pairs.length === 0) throw new PreferenceDataError("trainDPO: no pairs; pass at least one {prompt, chosen, rejected}")
  const ctx = contextOf(model)
  checkAll(pairs.map((p) => ({ prompt: p.prompt, completion: p.chosen })), ctx, "pair (chosen)")
  checkAll(pairs.map((p) => ({ prompt: p.prompt, completion: p.rejected })), ctx, "pair (rejected)")
  const vars = resolveTrainable(model, trainableVars)

  let ref: PairReference[] | undefined
  let refInfo: TrainResult["reference"]
  if (cfg.algo === "dpo" && !cfg.referenceFree) {
    if (options.reference) {
      if (options.reference.length !== pairs.length)
        throw new PreferenceDataError(`trainDPO: ${options.reference.length} reference entries for ${pairs.length} pairs; compute them on the same pairs`)
      ref = options.reference
    } else {
      const r = precomputePairReference(model, pairs, { cacheDir: options.cacheDir })
      ref = r.values
      refInfo = { key: r.key, fromCache: r.fromCache }
    }
  }

  const optimizer = options.optimizer ?? tf.train.adam(cfg.learningRate)
  const steps = totalSteps(pairs.length, cfg)
  const history: Record<string, number>[] = []
  const it = batches(pairs.length, cfg.batchSize, cfg.seed)
  for (let step = 1; step <= steps; step++) {
    if (await stopRequested(options.signal)) break
    const idx = it.next().value as number[]
    const batch = idx.map((i) => pairs[i])
    const metrics = optimizerStep(optimizer, vars, cfg.maxGradNorm, () => {
      const cb = completionBatch(batch.map((p) => ({ prompt: p.prompt, completion: p.chosen })), ctx, "pair")
      const rb = completionBatch(batch.map((p) => ({ prompt: p.prompt, completion: p.rejected })), ctx, "pair")
      const cl = tokenLogps(model, cb) // [B,Lc]
      const rl = tokenLogps(model, rb) // [B,Lr]
      return pairwiseLoss(cfg, { cl, cm: cb.mask, rl, rm: rb.mask }, ref && idx.map((i) => ref![i]))
    })
    history.push(metrics)
    options.onStep?.(step, metrics)
  }
  if (!options.optimizer) optimizer.dispose()
  return { steps: history.length, history, reference: refInfo, ...stopped(options.signal) }
}

function pairwiseLoss(
  cfg: PairwiseConfig,
  t: { cl: tf.Tensor2D; cm: tf.Tensor2D; rl: tf.Tensor2D; rm: tf.Tensor2D },
  ref: PairReference[] | undefined,
): LossOutput {
  switch (cfg.algo) {
    case "dpo": {
      const average = cfg.lossType === "ipo" // TRL averages log-probs over tokens for IPO
      const zeros = new Array<number>(t.cl.shape[0]).fill(0) // referenceFree: the loss ignores them
      const refC = ref ? ref.map((r) => (average ? r.chosen / r.chosenTokens : r.chosen)) : zeros
      const refR = ref ? ref.map((r) => (average ? r.rejected / r.rejectedTokens : r.rejected)) : zeros
      return dpoLoss(
        {
          policyChosenLogps: sequenceLogps(t.cl, t.cm, average),
          policyRejectedLogps: sequenceLogps(t.rl, t.rm, average),
          refChosenLogps: tf.tensor1d(refC),
          refRejectedLogps: tf.tensor1d(refR),
          // RPO: the chosen tokens' mean NLL [] (over every chosen token of the batch, as TRL)
          ...(cfg.rpoAlpha > 0 ? { chosenNll: tf.div(tf.neg(tf.sum(t.cl)), tf.maximum(tf.sum(t.cm), 1)) as tf.Scalar } : {}),
        },
        cfg,
      )
    }
    case "simpo":
      return simpoLoss({ chosenLogps: t.cl, chosenMask: t.cm, rejectedLogps: t.rl, rejectedMask: t.rm }, cfg)
    case "orpo":
      return orpoLoss({ chosenLogps: t.cl, chosenMask: t.cm, rejectedLogps: t.rl, rejectedMask: t.rm }, cfg)
  }
}

/**
 * Train on prompt/completion/label examples with KTO. The KL term uses mismatched pairs built inside
 * chunks of batchSize (TRL's `_get_kl_dataset`); its policy log-probs are taken without gradient.
 */
export async function trainKTO(
  model: PolicyModel,
  examples: TokenLabelled[],
  config: KTOConfig,
  trainableVars?: tf.Variable[],
  options: TrainOptions & { reference?: LabelledReference[] } = {},
): Promise<TrainResult> {
  if (examples.length < 2) throw new PreferenceDataError("trainKTO: needs at least 2 examples (the KL estimate pairs each prompt with another example's completion)")
  examples.forEach((e, i) => {
    if (typeof e.label !== "boolean") throw new PreferenceDataError(`example ${i}: label must be true (desirable) or false (undesirable), got ${JSON.stringify(e.label)}`)
  })
  const ctx = contextOf(model)
  checkAll(examples, ctx, "example")
  const kl = klPairs(examples, config.batchSize)
  checkAll(kl, ctx, "KL pair")
  const vars = resolveTrainable(model, trainableVars)
  let ref = options.reference
  let refInfo: TrainResult["reference"]
  if (!ref) {
    const r = precomputeLabelledReference(model, examples, config.batchSize, { cacheDir: options.cacheDir })
    ref = r.values
    refInfo = { key: r.key, fromCache: r.fromCache }
  } else if (ref.length !== examples.length) {
    throw new PreferenceDataError(`trainKTO: ${ref.length} reference entries for ${examples.length} examples; compute them on the same examples`)
  }
  const optimizer = options.optimizer ?? tf.train.adam(config.learningRate)
  const steps = totalSteps(examples.length, config)
  const history: Record<string, number>[] = []
  const it = batches(examples.length, config.batchSize, config.seed)
  const useKL = config.lossType === "kto"
  for (let step = 1; step <= steps; step++) {
    if (await stopRequested(options.signal)) break
    const idx = it.next().value as number[]
    const policyKL = useKL
      ? tf.tidy(() => {
          const b = completionBatch(idx.map((i) => kl[i]), ctx, "KL pair")
          return sequenceLogps(tokenLogps(model, b), b.mask)
        })
      : undefined
    const metrics = optimizerStep(optimizer, vars, config.maxGradNorm, () => {
      const b = completionBatch(idx.map((i) => examples[i]), ctx, "example")
      return ktoLoss(
        {
          policyLogps: sequenceLogps(tokenLogps(model, b), b.mask),
          refLogps: tf.tensor1d(idx.map((i) => ref![i].completion)),
          labels: tf.tensor1d(idx.map((i) => (examples[i].label ? 1 : 0))),
          policyKLLogps: policyKL,
          refKLLogps: useKL ? tf.tensor1d(idx.map((i) => ref![i].kl)) : undefined,
        },
        config,
      )
    })
    policyKL?.dispose()
    history.push(metrics)
    options.onStep?.(step, metrics)
  }
  if (!options.optimizer) optimizer.dispose()
  return { steps: history.length, history, reference: refInfo, ...stopped(options.signal) }
}

/** One sampled completion handed to a reward function. */
export interface Sample {
  promptIndex: number
  prompt: number[]
  completion: number[]
}

/** Scores a batch of samples; one finite number per sample (may be async, e.g. a judge over NATS). */
export type RewardFn = (samples: Sample[]) => number[] | Promise<number[]>

/**
 * Run every reward function on the samples and sum them with `weights` (default 1 each), as TRL's
 * reward_funcs / reward_weights. Each function's mean goes to the metrics as rewards/<name>/mean.
 */
export async function scoreSamples(
  trainer: string,
  rewardFns: RewardFn | RewardFn[],
  weights: number[],
  samples: Sample[],
  step: number,
): Promise<{ rewards: number[]; perFunction: Record<string, number> }> {
  const fns = Array.isArray(rewardFns) ? rewardFns : [rewardFns]
  if (fns.length === 0) throw new PreferenceDataError(`${trainer}: no reward function; pass one or a list`)
  if (weights.length > 0 && weights.length !== fns.length)
    throw new PreferenceConfigError("GRPOConfig", "rewardWeights", `has ${weights.length} weights for ${fns.length} reward functions; give one weight per function or none`)
  const total = new Array<number>(samples.length).fill(0)
  const perFunction: Record<string, number> = {}
  for (let f = 0; f < fns.length; f++) {
    const name = fns[f].name || `reward_${f}`
    const label = fns.length > 1 ? ` "${name}"` : ""
    let r: number[]
    try {
      r = await fns[f](samples)
    } catch (e) {
      throw new Error(`${trainer}: the reward function${label} threw at step ${step}: ${(e as Error).message}`)
    }
    if (!Array.isArray(r) || r.length !== samples.length)
      throw new Error(`${trainer}: the reward function${label} returned ${Array.isArray(r) ? r.length : typeof r} values for ${samples.length} samples; return one number per sample`)
    const bad = r.findIndex((x) => typeof x !== "number" || !Number.isFinite(x))
    if (bad >= 0) throw new Error(`${trainer}: the reward function${label} gave sample ${bad} the reward ${r[bad]}; rewards must be finite numbers`)
    const w = weights.length > 0 ? weights[f] : 1
    r.forEach((x, i) => (total[i] += w * x))
    perFunction[`rewards/${name}/mean`] = r.reduce((a, b) => a + b, 0) / r.length
  }
  return { rewards: total, perFunction }
}

export interface GRPOOptions extends TrainOptions {
  /** Sampling stops at this token (kept in the completion and in the loss). */
  eosTokenId?: number
  /** A frozen model for the KL term when config.beta > 0 (e.g. the base with adapters off). */
  reference?: PolicyModel
}

/**
 * GRPO: for each batch of prompts, sample numGenerations completions per prompt with the model,
 * score them with `rewardFn`, normalise the rewards inside each group, and take numIterations
 * clipped policy-gradient steps. Metrics per step: reward, reward_std, frac_reward_zero_std,
 * completion_length, the loss's clip ratios and kl.
 */
export async function trainGRPO(
  model: PolicyModel,
  prompts: number[][],
  rewardFn: RewardFn | RewardFn[],
  config: GRPOConfig,
  trainableVars?: tf.Variable[],
  options: GRPOOptions = {},
): Promise<TrainResult> {
  if (prompts.length === 0) throw new PreferenceDataError("trainGRPO: no prompts; pass at least one prompt (token ids)")
  if (config.beta > 0 && !options.reference)
    throw new PreferenceConfigError("GRPOConfig", "beta", "is > 0, so the KL term needs options.reference (a frozen model); pass one or set beta to 0")
  const ctx = contextOf(model)
  prompts.forEach((p, i) => {
    if (!Array.isArray(p) || p.length === 0 || !p.every((x) => Number.isInteger(x) && x >= 0))
      throw new PreferenceDataError(`prompt ${i}: must be a non-empty array of token ids`)
    if (ctx !== undefined && p.length + config.maxCompletionLength - 1 > ctx)
      throw new PreferenceDataError(
        `prompt ${i}: ${p.length} tokens + maxCompletionLength ${config.maxCompletionLength} exceed the model's context ${ctx}; shorten the prompt or lower maxCompletionLength`,
      )
  })
  const vars = resolveTrainable(model, trainableVars)
  const optimizer = options.optimizer ?? tf.train.adam(config.learningRate)
  const random = rng(config.seed + 1)
  const steps = totalSteps(prompts.length, config)
  const history: Record<string, number>[] = []
  const it = batches(prompts.length, config.batchSize, config.seed)
  const G = config.numGenerations
  for (let step = 1; step <= steps; step++) {
    if (await stopRequested(options.signal)) break
    const idx = it.next().value as number[]
    const samples: Sample[] = []
    for (const i of idx) {
      const outs = sampleCompletions(model, prompts[i], { n: G, maxTokens: config.maxCompletionLength, temperature: config.temperature, eosTokenId: options.eosTokenId, random })
      for (const c of outs) samples.push({ promptIndex: i, prompt: prompts[i], completion: c })
    }
    const { rewards, perFunction } = await scoreSamples("trainGRPO", rewardFn, config.rewardWeights, samples, step)

    const batch = completionBatch(samples, ctx, "sample")
    // tidy keeps only the returned tensors (advantages and metrics), not the intermediates
    const adv = tf.tidy(() => groupAdvantages(tf.tensor1d(rewards), G, config.scaleRewards) as unknown as tf.TensorContainer) as unknown as GroupAdvantages
    const old = config.numIterations > 1 ? tf.tidy(() => tokenLogps(model, batch, config.temperature)) : undefined
    const ref = config.beta > 0 ? tf.tidy(() => tokenLogps(options.reference!, batch, config.temperature)) : undefined
    const rewardMetrics: Record<string, number> = { ...perFunction }
    for (const [k, v] of Object.entries(adv.metrics)) rewardMetrics[k] = v.dataSync()[0]
    tf.dispose(Object.values(adv.metrics))
    rewardMetrics["completion_length"] = samples.reduce((s, x) => s + x.completion.length, 0) / samples.length
    let metrics: Record<string, number> = {}
    for (let k = 0; k < config.numIterations; k++) {
      metrics = optimizerStep(optimizer, vars, config.maxGradNorm, () =>
        grpoLoss({ logps: tokenLogps(model, batch, config.temperature), oldLogps: old, refLogps: ref, mask: batch.mask, advantages: adv.advantages }, config),
      )
    }
    tf.dispose([batch.ids, batch.targets, batch.mask, adv.advantages])
    if (old) old.dispose()
    if (ref) ref.dispose()
    const all = { ...rewardMetrics, ...metrics }
    history.push(all)
    options.onStep?.(step, all)
  }
  if (!options.optimizer) optimizer.dispose()
  return { steps: history.length, history, ...stopped(options.signal) }
}

/** A model whose hidden states are exposed (GPT's `hidden` and `head`), so a value head can share the trunk. */
export interface ValueModel extends PolicyModel {
  hidden(ids: tf.Tensor2D, opts?: { training?: boolean }): tf.Tensor2D // (B*T, C)
  head(h: tf.Tensor2D): tf.Tensor2D // (B*T, V)
}

/**
 * PPO's critic: a linear layer on the policy's last hidden state, V(s_t) = h_t·w + b. With
 * `detachTrunk` the value loss trains only w and b, not the trunk (and its adapter) it reads —
 * the policy then moves by the policy loss alone, as with OpenRLHF's separate critic model.
 */
export class ValueHead {
  readonly w: tf.Variable // [C,1]
  readonly b: tf.Variable // [1]
  readonly detachTrunk: boolean
  constructor(dModel: number, seed = 0, opts: { detachTrunk?: boolean } = {}) {
    this.detachTrunk = opts.detachTrunk ?? false
    const w = tf.randomNormal([dModel, 1], 0, 0.02, "float32", seed)
    const b = tf.zeros([1])
    this.w = tf.variable(w, true)
    this.b = tf.variable(b, true)
    tf.dispose([w, b])
  }
  variables(): tf.Variable[] {
    return [this.w, this.b]
  }
  dispose() {
    this.w.dispose()
    this.b.dispose()
  }
}

/** Per-token log-probs [B,L] and values [B,L] (0 outside the mask) from one pass over the trunk. */
export function logpsAndValues(model: ValueModel, value: ValueHead, batch: CompletionBatch, temperature: number): { logps: tf.Tensor2D; values: tf.Tensor2D } {
  return tf.tidy(() => {
    const [B, L] = batch.ids.shape
    const h = model.hidden(batch.ids, { training: false }) // (B*L, C)
    let logits = model.head(h) // (B*L, V)
    if (temperature !== 1) logits = tf.div(logits, temperature)
    const V = logits.shape[1]
    const picked = tf.sum(tf.mul(tf.logSoftmax(logits), tf.oneHot(tf.reshape(batch.targets, [B * L]), V)), 1) // (B*L)
    const logps = tf.mul(tf.reshape(picked, [B, L]), batch.mask) as tf.Tensor2D
    const hv = value.detachTrunk ? stopGradient(h) : h
    const values = tf.mul(tf.reshape(tf.add(tf.matMul(hv, value.w), value.b), [B, L]), batch.mask) as tf.Tensor2D
    return { logps, values }
  })
}

export interface PPOOptions extends TrainOptions {
  eosTokenId?: number
  /** A frozen model for the KL penalty in the reward (needed when config.klCoef > 0). */
  reference?: PolicyModel
  /** The critic; a fresh one (on the model's dModel) when omitted. It is trained with the policy. */
  valueHead?: ValueHead
}

/**
 * PPO (TRL's PPOTrainer, one completion per prompt): sample a completion for each prompt of the batch,
 * score it, turn score and per-token KL to the reference into per-token rewards, estimate advantages
 * with GAE on the value head, then numPpoEpochs clipped policy + value steps on that batch.
 */
export async function trainPPO(
  model: ValueModel,
  prompts: number[][],
  rewardFn: RewardFn | RewardFn[],
  config: PPOConfig,
  trainableVars?: tf.Variable[],
  options: PPOOptions = {},
): Promise<TrainResult & { valueHead: ValueHead }> {
  if (prompts.length === 0) throw new PreferenceDataError("trainPPO: no prompts; pass at least one prompt (token ids)")
  if (typeof model.hidden !== "function" || typeof model.head !== "function")
    throw new PreferenceDataError("trainPPO: the model must expose hidden(ids) and head(h) (the value head reads the hidden states)")
  if (config.klCoef > 0 && !options.reference)
    throw new PreferenceConfigError("PPOConfig", "klCoef", "is > 0, so the KL penalty needs options.reference (a frozen model); pass one or set klCoef to 0")
  const ctx = contextOf(model)
  prompts.forEach((p, i) => {
    if (!Array.isArray(p) || p.length === 0 || !p.every((x) => Number.isInteger(x) && x >= 0))
      throw new PreferenceDataError(`prompt ${i}: must be a non-empty array of token ids`)
    if (ctx !== undefined && p.length + config.maxCompletionLength - 1 > ctx)
      throw new PreferenceDataError(`prompt ${i}: ${p.length} tokens + maxCompletionLength ${config.maxCompletionLength} exceed the model's context ${ctx}`)
  })
  const dModel = (model.config as { dModel?: number } | undefined)?.dModel
  const valueHead = options.valueHead ?? new ValueHead(dModel ?? tf.tidy(() => model.hidden(tf.tensor2d([[prompts[0][0]]], [1, 1], "int32")).shape[1]), config.seed)
  const vars = [...resolveTrainable(model, trainableVars), ...valueHead.variables()]
  const optimizer = options.optimizer ?? tf.train.adam(config.learningRate)
  const random = rng(config.seed + 1)
  const steps = totalSteps(prompts.length, config)
  const history: Record<string, number>[] = []
  const it = batches(prompts.length, config.batchSize, config.seed)
  for (let step = 1; step <= steps; step++) {
    if (await stopRequested(options.signal)) break
    const idx = it.next().value as number[]
    const samples: Sample[] = idx.map((i) => ({
      promptIndex: i,
      prompt: prompts[i],
      completion: sampleCompletions(model, prompts[i], { n: 1, maxTokens: config.maxCompletionLength, temperature: config.temperature, eosTokenId: options.eosTokenId, random })[0],
    }))
    const { rewards: scores, perFunction } = await scoreSamples("trainPPO", rewardFn, [], samples, step)
    const batch = completionBatch(samples, ctx, "sample")
    // rollout statistics, no gradient
    const roll = tf.tidy(() => {
      const { logps, values } = logpsAndValues(model, valueHead, batch, config.temperature)
      const refLogps = options.reference ? tokenLogps(options.reference, batch, config.temperature) : logps
      const r = ppoRewards({ logps, refLogps, mask: batch.mask, scores: tf.tensor1d(scores) }, config)
      const { advantages, returns } = gae({ rewards: r.rewards, values, mask: batch.mask }, config)
      return { logps, values, advantages, returns, metrics: r.metrics }
    })
    const rewardMetrics: Record<string, number> = { ...perFunction }
    for (const [k, v] of Object.entries(roll.metrics)) rewardMetrics[k] = v.dataSync()[0]
    let metrics: Record<string, number> = {}
    for (let epoch = 0; epoch < config.numPpoEpochs; epoch++) {
      metrics = optimizerStep(optimizer, vars, config.maxGradNorm, () => {
        const cur = logpsAndValues(model, valueHead, batch, config.temperature)
        return ppoLoss(
          { logps: cur.logps, oldLogps: roll.logps, advantages: roll.advantages, mask: batch.mask, values: cur.values, oldValues: roll.values, returns: roll.returns },
          config,
        )
      })
    }
    tf.dispose([batch.ids, batch.targets, batch.mask, roll.logps, roll.values, roll.advantages, roll.returns, ...Object.values(roll.metrics)])
    const all = { ...rewardMetrics, ...metrics }
    history.push(all)
    options.onStep?.(step, all)
  }
  if (!options.optimizer) optimizer.dispose()
  return { steps: history.length, history, valueHead, ...stopped(options.signal) }
}
