// `moa router train` as a function: ask the cluster's experts a labelled prompt set, fit a gate
// on who answered best, measure it on held-out questions, store it as a new version.
import type { NatsConnection } from "@nats-io/nats-core"
import { SKILLS, allCapitals, generate, type Example, type SkillName } from "@moa/skills"
import type { ExpertClient } from "./client.ts"
import { ngramFeatures, type FeatureExtractor } from "./features.ts"
import { defaultGateConfig, type GateConfig } from "./gate.ts"
import { discoverExperts } from "./service.ts"
import { publishGate, type GatePointer } from "./store.ts"
import { collectOutcomes, evaluateRouting, fitGate, skillExpertMap, type LabelledPrompt, type Outcome, type RoutingReport } from "./train.ts"
import type { Gate } from "./gate.ts"

export interface SkillPromptOptions {
  readonly skills?: ReadonlyArray<SkillName>
  /** Questions per skill. */
  readonly n: number
  readonly split: "train" | "test"
  readonly seed?: number
  readonly size?: "full" | "ci"
}

/** Labelled prompts from the skills benchmark (capital: a slice of the facts, both forms). */
export const skillPrompts = (o: SkillPromptOptions): LabelledPrompt[] =>
  (o.skills ?? SKILLS).flatMap((skill): Example[] => {
    if (skill !== "capital") return generate(skill, { n: o.n, seed: o.seed ?? 0, split: o.split, size: o.size })
    const caps = allCapitals(o.size)
    const off = (o.seed ?? 0) * 7919 + (o.split === "test" ? 3 : 0)
    return Array.from({ length: Math.min(o.n, caps.length) }, (_, i) => caps[(off + i * 37) % caps.length])
  }).map((e) => ({ prompt: e.question, answer: e.answer, skill: e.skill }))

export interface TrainRouterOptions {
  readonly cluster: string
  /** Experts to ask (default: every expert discovered on the cluster). */
  readonly experts?: ReadonlyArray<ExpertClient>
  readonly train?: ReadonlyArray<LabelledPrompt>
  readonly heldOut?: ReadonlyArray<LabelledPrompt>
  /** Per skill when the prompts come from the skills benchmark (default 40 train, 40 held-out). */
  readonly nTrain?: number
  readonly nHeldOut?: number
  readonly features?: FeatureExtractor
  readonly gate?: Partial<GateConfig>
  readonly epochs?: number
  readonly lbCoef?: number
  readonly deadlineMs?: number
  /** skill → expert when names differ (default: the expert named like the skill). */
  readonly skillExperts?: Record<string, string>
  readonly version?: string
  /** Store the gate in the cluster (default true). */
  readonly publish?: boolean
  readonly log?: (line: string) => void
}

export interface TrainRouterResult {
  readonly gate: Gate
  readonly features: FeatureExtractor
  readonly outcomes: ReadonlyArray<Outcome>
  readonly report: RoutingReport
  /** Accuracy of each expert per skill on the training prompts (what the gate learned from). */
  readonly expertAccuracy: Record<string, Record<string, number>>
  readonly pointer?: GatePointer
}

export const trainRouter = async (nc: NatsConnection, o: TrainRouterOptions): Promise<TrainRouterResult> => {
  const log = o.log ?? (() => {})
  const experts = o.experts ?? (await discoverExperts(nc, o.cluster))
  if (experts.length === 0) throw new Error(`no experts found on cluster "${o.cluster}": start them first (moa up), or check the cluster name and NATS URL`)
  const names = experts.map((e) => e.name)
  log(`experts: ${names.join(", ")}`)
  const train = o.train ?? skillPrompts({ n: o.nTrain ?? 40, split: "train", seed: 1 })
  const heldOut = o.heldOut ?? skillPrompts({ n: o.nHeldOut ?? 40, split: "test", seed: 2 })
  log(`asking ${experts.length} experts ${train.length} prompts …`)
  const outcomes = await collectOutcomes(train, experts, { deadlineMs: o.deadlineMs ?? 30_000 })
  const expertAccuracy: Record<string, Record<string, number>> = {}
  for (const name of names) {
    expertAccuracy[name] = {}
    for (const skill of new Set(outcomes.map((x) => x.skill ?? "?"))) {
      const os = outcomes.filter((x) => (x.skill ?? "?") === skill)
      expertAccuracy[name][skill] = os.reduce((a, x) => a + (x.results[name]?.score ?? 0), 0) / os.length
    }
  }
  const features = o.features ?? ngramFeatures({ dim: 512 })
  const skillExpert = skillExpertMap(names, o.skillExperts)
  const config = defaultGateConfig(names, features.spec, o.gate)
  const { gate, history } = await fitGate(outcomes, config, features, { epochs: o.epochs ?? 30, lbCoef: o.lbCoef, skillExpert })
  log(`gate fitted: loss ${history[0].loss.toFixed(3)} → ${history.at(-1)!.loss.toFixed(3)}`)
  const labelled = heldOut.flatMap((p) => {
    const e = skillExpert(p.skill)
    return e ? [{ prompt: p.prompt, expert: e, skill: p.skill }] : []
  })
  const report = await evaluateRouting(gate, features, labelled)
  log(`held-out routing: top-1 ${(100 * report.top1).toFixed(1)}%, top-2 ${(100 * report.top2).toFixed(1)}% on ${report.n} questions; load-balance loss ${report.lbLoss.toFixed(3)}`)
  let pointer: GatePointer | undefined
  if (o.publish ?? true) {
    pointer = await publishGate(nc, o.cluster, gate, { version: o.version, metrics: { top1: report.top1, top2: report.top2, n: report.n, lbLoss: report.lbLoss } })
    log(`stored gate ${pointer.version} in the cluster; routers reload it now`)
  }
  return { gate, features, outcomes, report, expertAccuracy, pointer }
}
