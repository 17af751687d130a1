// Training the gate from data the cluster itself produces:
//   1. run a labelled prompt set through every expert   (collectOutcomes)
//   2. score each answer (exact match by default)        (collectOutcomes)
//   3. target = the experts that answered best; ties broken by the skill label  (targetsFrom)
//   4. fit the gate (train.ts → gate.ts trainGate) and measure routing accuracy  (fitGate, evaluateRouting)
import type { ExpertClient } from "./client.ts"
import type { FeatureExtractor } from "./features.ts"
import { Gate, loadBalanceLoss, trainGate, type GateConfig, type TrainGateOptions } from "./gate.ts"
import { normalizeAnswer } from "./aggregate.ts"
import * as tf from "@tensorflow/tfjs"

export interface LabelledPrompt {
  readonly prompt: string
  /** The right answer. */
  readonly answer: string
  /** The skill the prompt belongs to (used to break ties and to measure routing). */
  readonly skill?: string
}

export interface ExpertAnswer {
  readonly text?: string
  readonly score: number
  readonly latencyMs: number
  readonly error?: string
}

export interface Outcome extends LabelledPrompt {
  readonly results: Record<string, ExpertAnswer>
}

/** Exact match after trimming (SKILLS.md): 1 or 0. */
export const exactMatch = (expected: string, got: string): number => (normalizeAnswer(expected) === normalizeAnswer(got) ? 1 : 0)

/** Ask every expert every prompt (experts in parallel, `concurrency` prompts at a time) and score the answers. */
export const collectOutcomes = async (
  prompts: ReadonlyArray<LabelledPrompt>,
  experts: ReadonlyArray<ExpertClient>,
  opts: { deadlineMs?: number; concurrency?: number; maxTokens?: number; score?: (expected: string, got: string) => number; onProgress?: (done: number, total: number) => void } = {},
): Promise<Outcome[]> => {
  if (experts.length === 0) throw new Error("collectOutcomes: no experts to ask; start the cluster's experts first")
  const score = opts.score ?? exactMatch
  const deadlineMs = opts.deadlineMs ?? 10_000
  const out: Outcome[] = new Array(prompts.length)
  let next = 0
  let done = 0
  const worker = async () => {
    while (next < prompts.length) {
      const i = next++
      const p = prompts[i]
      const entries = await Promise.all(
        experts.map(async (c): Promise<[string, ExpertAnswer]> => {
          const t0 = performance.now()
          try {
            const r = await c.generate({ prompt: p.prompt, temperature: 0, maxTokens: opts.maxTokens }, { deadlineMs })
            return [c.name, { text: r.text, score: score(p.answer, r.text), latencyMs: r.latencyMs }]
          } catch (e) {
            return [c.name, { score: 0, latencyMs: performance.now() - t0, error: String((e as Error)?.message ?? e) }]
          }
        }),
      )
      out[i] = { ...p, results: Object.fromEntries(entries) }
      opts.onProgress?.(++done, prompts.length)
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, opts.concurrency ?? 8) }, worker))
  return out
}

/** Which expert is "the expert of" a skill: the one named like it (override with a map). */
export const skillExpertMap = (experts: ReadonlyArray<string>, explicit: Record<string, string> = {}) => (skill: string | undefined): string | undefined => {
  if (skill === undefined) return undefined
  if (explicit[skill]) return explicit[skill]
  return experts.find((e) => e === skill) ?? experts.find((e) => e.includes(skill))
}

/**
 * Target distribution per outcome over `experts`: one-hot on the skill's expert when it is among
 * the best (or when every expert ties), else uniform over the experts that scored best.
 */
export const targetsFrom = (outcomes: ReadonlyArray<Outcome>, experts: ReadonlyArray<string>, skillExpert = skillExpertMap(experts)): Float32Array[] =>
  outcomes.map((o) => {
    const scores = experts.map((e) => o.results[e]?.score ?? 0)
    const best = Math.max(...scores)
    const winners = experts.filter((_, i) => scores[i] === best)
    const label = skillExpert(o.skill)
    const t = new Float32Array(experts.length)
    if (label !== undefined && winners.includes(label)) t[experts.indexOf(label)] = 1
    else for (const w of winners) t[experts.indexOf(w)] = 1 / winners.length
    return t
  })

export interface RoutingReport {
  readonly n: number
  /** Share of prompts whose expected expert is the gate's top-1 / among its top-2. */
  readonly top1: number
  readonly top2: number
  /** Share of prompts whose top-1 is each expert. */
  readonly load: Record<string, number>
  /** Switch load-balancing loss of the gate's probabilities on these prompts (1 = uniform load). */
  readonly lbLoss: number
  readonly perSkill: Record<string, { n: number; top1: number }>
}

/** Routing accuracy of a gate on prompts whose right expert is known. */
export const evaluateRouting = async (
  gate: Gate,
  features: FeatureExtractor,
  prompts: ReadonlyArray<{ prompt: string; expert: string; skill?: string }>,
): Promise<RoutingReport> => {
  const x = await features.extract(prompts.map((p) => p.prompt))
  const probs = gate.probs(x)
  const E = gate.experts
  let top1 = 0
  let top2 = 0
  const load = Object.fromEntries(E.map((e) => [e, 0]))
  const perSkill: Record<string, { n: number; top1: number }> = {}
  probs.forEach((p, i) => {
    const order = [...p.keys()].sort((a, b) => p[b] - p[a])
    const want = E.indexOf(prompts[i].expert)
    const hit1 = order[0] === want
    if (hit1) top1++
    if (order.slice(0, 2).includes(want)) top2++
    load[E[order[0]]]++
    const s = prompts[i].skill ?? prompts[i].expert
    perSkill[s] ??= { n: 0, top1: 0 }
    perSkill[s].n++
    if (hit1) perSkill[s].top1++
  })
  const n = prompts.length
  const lbLoss = n === 0 ? 0 : tf.tidy(() => loadBalanceLoss(tf.tensor2d(probs)).dataSync()[0])
  for (const s of Object.values(perSkill)) s.top1 /= s.n
  return { n, top1: top1 / n, top2: top2 / n, load: Object.fromEntries(Object.entries(load).map(([k, v]) => [k, v / n])), lbLoss, perSkill }
}

/** Fit a new gate on outcomes; returns it with its training history. */
export const fitGate = async (
  outcomes: ReadonlyArray<Outcome>,
  config: GateConfig,
  features: FeatureExtractor,
  opts: TrainGateOptions & { skillExpert?: (skill: string | undefined) => string | undefined; seed?: number } = {},
): Promise<{ gate: Gate; history: ReadonlyArray<{ loss: number; ce: number; lb: number }> }> => {
  if (features.dim !== config.features.dim) throw new Error(`the gate config expects ${config.features.dim}-dim features but the extractor gives ${features.dim}`)
  const x = await features.extract(outcomes.map((o) => o.prompt))
  const y = targetsFrom(outcomes, config.experts, opts.skillExpert ?? skillExpertMap(config.experts))
  const gate = new Gate(config, opts.seed ?? 0)
  const { history } = await trainGate(gate, x, y, opts)
  return { gate, history }
}
