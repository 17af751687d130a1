/**
 * The pure logic of a preference round: scoring candidates with several reward sources (a source
 * that throws is recorded and skipped), building DPO pairs / KTO items / GRPO groups, deciding
 * promotion, and rebuilding a run's state from its recorded events. No I/O here.
 */

/** One prompt of a round: what the user asked, what the model sees, and (when known) the right completion. */
export interface Task {
  /** the user-facing question (what rewards and ratings are keyed by) */
  readonly question: string
  /** the model-internal prompt sent to the expert's generate */
  readonly prompt: string
  /** a right completion when one is known (the solver's), used when no sample is right */
  readonly reference?: string
}

/** A reward source: returns a number, or undefined to abstain (no opinion on this answer). */
export interface RewardSource {
  readonly name: string
  readonly weight?: number
  readonly fn: (task: Task, completion: string, ctx: { readonly peers: ReadonlyArray<string> }) => number | undefined
}

export interface RewardError {
  readonly source: string
  readonly question: string
  readonly completion: string
  readonly reason: string
}

/** A scored group: k completions of one expert for one task. `rewards[i]` is null when every source abstained or threw. */
export interface ScoredGroup {
  readonly task: Task
  readonly completions: ReadonlyArray<string>
  readonly rewards: ReadonlyArray<number | null>
}

/**
 * Score one group with every source: weighted mean of the sources that answered. A source that
 * throws is recorded in `errors` (with the reason) and skipped for that completion only.
 */
export function scoreGroup(
  task: Task,
  completions: ReadonlyArray<string>,
  sources: ReadonlyArray<RewardSource>,
  peers: ReadonlyArray<string> = [],
): { group: ScoredGroup; errors: RewardError[] } {
  const errors: RewardError[] = []
  const rewards = completions.map((c) => {
    let sum = 0
    let wsum = 0
    for (const s of sources) {
      const w = s.weight ?? 1
      try {
        const r = s.fn(task, c, { peers })
        if (r === undefined) continue
        if (!Number.isFinite(r)) throw new Error(`returned ${r}, expected a finite number`)
        sum += w * r
        wsum += w
      } catch (e) {
        errors.push({ source: s.name, question: task.question, completion: c, reason: e instanceof Error ? e.message : String(e) })
      }
    }
    return wsum > 0 ? sum / wsum : null
  })
  return { group: { task, completions, rewards }, errors }
}

/** Agreement between agents: the fraction of peer answers (other experts' and own samples) equal to this one. */
export const agreementSource = (weight = 1): RewardSource => ({
  name: "agreement",
  weight,
  fn: (_t, c, { peers }) => (peers.length === 0 ? undefined : peers.filter((p) => p.trim() === c.trim()).length / peers.length),
})

/** User ratings (from the console log): the mean rating in [0,1] of this answer to this question, else abstain. */
export const ratingsSource = (ratings: ReadonlyArray<{ question: string; answer: string; rating: number }>, weight = 1): RewardSource => {
  const by = new Map<string, number[]>()
  for (const r of ratings) {
    const k = `${r.question.trim()}\u0000${r.answer.trim()}`
    by.set(k, [...(by.get(k) ?? []), r.rating])
  }
  return {
    name: "ratings",
    weight,
    fn: (t, c) => {
      const rs = by.get(`${t.question.trim()}\u0000${c.trim()}`)
      return rs ? rs.reduce((a, b) => a + b, 0) / rs.length : undefined
    },
  }
}

export interface Pair {
  readonly prompt: string
  readonly chosen: string
  readonly rejected: string
}
export interface KtoItem {
  readonly prompt: string
  readonly completion: string
  readonly label: boolean
}
export interface Group {
  readonly prompt: string
  readonly completions: string[]
  readonly rewards: number[]
}

export interface PairOptions {
  /** at most this many rejected answers per prompt (default 4) */
  readonly maxRejectedPerPrompt?: number
  /** a completion with reward ≥ this is right (default 1) */
  readonly rightAt?: number
}

/** The best right completion of a group: its best-scoring sample when that one is right, else the task's reference. */
const chosenOf = (g: ScoredGroup, rightAt: number): string | undefined => {
  let best: string | undefined
  let bestR = -Infinity
  g.completions.forEach((c, i) => {
    const r = g.rewards[i]
    if (r !== null && r !== undefined && r >= rightAt && r > bestR) {
      best = c
      bestR = r
    }
  })
  return best ?? g.task.reference
}

/**
 * DPO-family pairs: chosen = a right answer (sampled, else the reference), rejected = the
 * expert's own distinct wrong answers (docs/preference.md: several per prompt).
 */
export function buildPairs(groups: ReadonlyArray<ScoredGroup>, o: PairOptions = {}): Pair[] {
  const rightAt = o.rightAt ?? 1
  const max = o.maxRejectedPerPrompt ?? 4
  const out: Pair[] = []
  for (const g of groups) {
    const chosen = chosenOf(g, rightAt)
    if (chosen === undefined) continue
    const wrong = new Set<string>()
    g.completions.forEach((c, i) => {
      const r = g.rewards[i]
      if (r !== null && r !== undefined && r < rightAt && c !== chosen) wrong.add(c)
    })
    for (const rejected of [...wrong].slice(0, max)) out.push({ prompt: g.task.prompt, chosen, rejected })
  }
  return out
}

/** KTO items: right answers desirable, distinct wrong answers undesirable (only prompts that have both). */
export function buildKto(groups: ReadonlyArray<ScoredGroup>, o: PairOptions = {}): KtoItem[] {
  return buildPairs(groups, o).flatMap((p, i, all) => {
    const first = i === 0 || all[i - 1]!.prompt !== p.prompt
    return [...(first ? [{ prompt: p.prompt, completion: p.chosen, label: true }] : []), { prompt: p.prompt, completion: p.rejected, label: false }]
  })
}

/**
 * GRPO groups: the sampled completions with their rewards; groups with no spread carry no
 * gradient, so when every sample is wrong the reference joins the group as a right answer, and
 * a group whose samples are all right is dropped.
 */
export function buildGroups(groups: ReadonlyArray<ScoredGroup>, o: PairOptions = {}): Group[] {
  const rightAt = o.rightAt ?? 1
  const out: Group[] = []
  for (const g of groups) {
    const cs: string[] = []
    const rs: number[] = []
    g.completions.forEach((c, i) => {
      const r = g.rewards[i]
      if (r !== null && r !== undefined) {
        cs.push(c)
        rs.push(r)
      }
    })
    // the trainer needs groups of one size: a completion no source could score drops its group
    if (cs.length === 0 || cs.length !== g.completions.length) continue
    const spread = Math.max(...rs) - Math.min(...rs)
    if (spread === 0) {
      if (rs[0]! >= rightAt || g.task.reference === undefined) continue
      // all wrong: the reference takes the last sample's place (same group size)
      cs[cs.length - 1] = g.task.reference
      rs[rs.length - 1] = 1
    }
    out.push({ prompt: g.task.prompt, completions: cs, rewards: rs })
  }
  return out
}

export interface Rollout {
  readonly prompt: string
  readonly completion: string
  readonly reward: number
}

/**
 * PPO rollouts: every scored completion with its reward — the critic learns from the prompts the
 * expert already gets right too. As for GRPO groups, a prompt whose samples are all wrong gets
 * the reference in its last sample's place (else it teaches only what not to say).
 */
export function buildRollouts(groups: ReadonlyArray<ScoredGroup>, o: PairOptions = {}): Rollout[] {
  const rightAt = o.rightAt ?? 1
  const out: Rollout[] = []
  for (const g of groups) {
    const rs = g.completions.map((c, i) => ({ prompt: g.task.prompt, completion: c, reward: g.rewards[i] }))
    const scored = rs.filter((r): r is Rollout => r.reward !== null && r.reward !== undefined)
    if (scored.length === 0) continue
    if (scored.every((r) => r.reward < rightAt) && g.task.reference !== undefined) scored[scored.length - 1] = { prompt: g.task.prompt, completion: g.task.reference, reward: 1 }
    out.push(...scored)
  }
  return out
}

export type Algo = "dpo" | "ipo" | "simpo" | "orpo" | "kto" | "ppo" | "grpo"
export const ALGOS: ReadonlyArray<Algo> = ["dpo", "ipo", "simpo", "orpo", "kto", "ppo", "grpo"]
export const isAlgo = (s: string): s is Algo => (ALGOS as ReadonlyArray<string>).includes(s)

/** The training data of one expert for one round, in the shape its algorithm takes. */
export function trainingData(algo: Algo, groups: ReadonlyArray<ScoredGroup>, o: PairOptions = {}): { algorithm: string; data: unknown[] } {
  switch (algo) {
    case "kto":
      return { algorithm: "kto", data: buildKto(groups, o) }
    case "grpo":
      return { algorithm: "grpo", data: buildGroups(groups, o) }
    case "ppo":
      // the coordinator is the rollout and reward side, the expert the actor and its critic (OpenRLHF's split)
      return { algorithm: "ppo", data: buildRollouts(groups, o) }
    default:
      return { algorithm: algo, data: buildPairs(groups, o) }
  }
}

/** Default hyper-parameters per algorithm (docs/preference.md: online GRPO wants lr ~2e-3). */
export function defaultHyper(algo: Algo, examples: number): Record<string, unknown> {
  const batchSize = Math.max(1, Math.min(16, examples))
  const epochs = 3
  const maxSteps = Math.max(4, Math.min(60, Math.ceil((examples * epochs) / batchSize)))
  if (algo === "grpo") return { learningRate: 2e-3 * 2.5, batchSize: Math.min(8, batchSize), maxSteps, beta: 0 }
  // rollouts are sampled at 0.8 (the coordinator's default); π_old and π are taken at the same
  // temperature. One epoch a batch (TRL's default is 4): the job already reuses each rollout over
  // its steps, and 4 epochs moved the skills cluster's sort expert so far in 10 steps that it lost
  // 10 points. GAE's λ = 1 (TRL's 0.95): the job's critic starts untrained, so advantages that
  // bootstrap from its values are noise that depends on the token's position (docs/coordinator.md)
  if (algo === "ppo") return { learningRate: 2e-3, batchSize: Math.min(64, examples), maxSteps, numPpoEpochs: 1, lam: 1, temperature: 0.8 }
  // DPO with the chosen answers' NLL (RPO, TRL's rpo_alpha = 1): the pairs of a round share most
  // tokens, and plain DPO lowered the right answers with the wrong ones (docs/coordinator.md)
  if (algo === "dpo") return { learningRate: 5e-3, batchSize, maxSteps, beta: 0.1, rpoAlpha: 1 }
  return { learningRate: 5e-3, batchSize, maxSteps, beta: 0.1 }
}

export interface Decision {
  readonly promote: boolean
  readonly reason: string
}

/** Promote a candidate only when it is strictly better on held-out prompts than the current version (by more than `minGain`). */
export function decide(currentAcc: number, candidateAcc: number, minGain = 0): Decision {
  return candidateAcc > currentAcc + minGain
    ? { promote: true, reason: `held-out accuracy ${pct(candidateAcc)} > ${pct(currentAcc)}` }
    : { promote: false, reason: `held-out accuracy ${pct(candidateAcc)} is not above ${pct(currentAcc)}${minGain > 0 ? ` + ${pct(minGain)}` : ""}: keeping the current version` }
}
export const pct = (x: number) => `${(100 * x).toFixed(1)}%`

// ---- events and the state rebuilt from them ----------------------------------------------------

/** Steps of a round for one expert, in order. Each is recorded once (its key is the idempotency key). */
export type Step = "baseline" | "samples" | "job-queued" | "trained" | "job-failed" | "job-invalid" | "evaluated" | "decided" | "skipped" | "reward-errors" | "rollback" | "run-started" | "round-done"

export interface RoundEvent {
  readonly run: string
  readonly round: number
  /** expert name, or "_" for run-level events */
  readonly expert: string
  readonly step: Step
  readonly at: string
  /** distinguishes repeatable events (an invalid job, a rollback) that share run/round/expert/step */
  readonly id?: string
  readonly data: Record<string, unknown>
}

/** The idempotency key of an event (also the JetStream message id). */
export const eventKey = (e: Pick<RoundEvent, "run" | "round" | "expert" | "step" | "id">) => `${e.run}.${e.round}.${e.expert}.${e.step}${e.id ? `.${e.id}` : ""}`

export interface RunState {
  readonly events: Map<string, RoundEvent>
  /** every event, in stream order (rollbacks and invalid jobs repeat, so they are not keyed) */
  readonly log: RoundEvent[]
}

/** Rebuild a run's state from its events (later duplicates of a key are ignored: a step counts once). */
export function foldEvents(events: Iterable<RoundEvent>): RunState {
  const map = new Map<string, RoundEvent>()
  const log: RoundEvent[] = []
  for (const e of events) {
    const k = eventKey(e)
    if (map.has(k)) continue
    map.set(k, e)
    log.push(e)
  }
  return { events: map, log }
}

export const stepOf = (s: RunState, run: string, round: number, expert: string, step: Step) => s.events.get(eventKey({ run, round, expert, step }))

/** Per round and expert: reward mean of the samples and held-out accuracy before/after (for the status table and the plot). */
export interface RoundSummary {
  readonly round: number
  readonly expert: string
  readonly rewardMean?: number
  readonly pairs?: number
  readonly accBefore?: number
  readonly accCandidate?: number
  readonly accAfter?: number
  readonly version?: string
  readonly promoted?: boolean
  readonly failure?: string
}

export function summarize(s: RunState): RoundSummary[] {
  const rows = new Map<string, RoundSummary>()
  const get = (round: number, expert: string) => {
    const k = `${round}\u0000${expert}`
    const r = rows.get(k) ?? { round, expert }
    rows.set(k, r)
    return [k, r] as const
  }
  for (const e of s.log) {
    if (e.expert === "_" || e.round < 1) continue
    const [k, r] = get(e.round, e.expert)
    const d = e.data as Record<string, any>
    if (e.step === "samples") rows.set(k, { ...r, rewardMean: d.rewardMean, pairs: d.examples })
    else if (e.step === "baseline") rows.set(k, { ...r, accBefore: d.accuracy })
    else if (e.step === "trained") rows.set(k, { ...r, version: d.version })
    else if (e.step === "evaluated") rows.set(k, { ...r, accCandidate: d.accuracy })
    else if (e.step === "decided") rows.set(k, { ...r, promoted: d.promote, accAfter: d.promote ? d.candidate : d.current })
    else if (e.step === "job-failed" || e.step === "skipped") rows.set(k, { ...r, failure: String(d.reason) })
  }
  return [...rows.values()].sort((a, b) => a.round - b.round || a.expert.localeCompare(b.expert))
}
