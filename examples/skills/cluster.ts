/**
 * The skills cluster: one expert per skill of SKILLS.md (a LoRA adapter on one shared base
 * checkpoint), the generalist base as the fallback expert, and the router (the gate trained by
 * train.ts, loaded from the committed artifacts and published to the cluster's registry).
 *
 *   npm run demo                                        # this cluster + the console
 *   npm run moa -- up examples/skills/cluster.ts        # just the cluster
 *   npm run moa -- console                              # then talk to it
 *   npm run train:skills                                # re-make the artifacts from scratch
 *
 * Experts speak the plain questions and answers of SKILLS.md; inside, each one feeds its model
 * the skill's internal format (`@moa/skills` toPrompt: zero-padded add, count answers that
 * repeat the letter) and parses the completion back (`parse`), so the router, the console and
 * the coordinator only ever see `add 37 45` → `82`.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { defineAgent, defineCluster, type AgentDefinition, type VerbHandler } from "@moa/runtime"
import { defineExpert } from "@moa/expert"
import { SKILLS, toPrompt, toCompletion, parse, detectSkill, maxCompletionLength, type SkillName } from "@moa/skills"
import { defineCoordinator, plainSkillTasks } from "@moa/coordinator"
import type { GenerateChunk, GenerateRequest, GenerateResponse } from "@moa/protocol"
import { aggregatorExpert, hasAggregator } from "./aggregator.ts"

const here = path.dirname(fileURLToPath(import.meta.url))
export const ARTIFACTS = path.join(here, "artifacts")
export const BASE_DIR = path.join(ARTIFACTS, "base")
export const GATE_DIR = path.join(ARTIFACTS, "gate")
export const adapterDir = (s: SkillName) => path.join(ARTIFACTS, "adapters", s)
/** The experts in the gate's order: one per skill, then the generalist. */
export const EXPERTS: ReadonlyArray<string> = [...SKILLS, "base"]
const STATE = path.join(process.env.MOA_STATE_DIR ?? path.join(process.cwd(), ".moa"), "experts")

/** The model's prompt for a user question: the skill's internal format, or the raw text + "=". */
export const modelPrompt = (question: string): string => {
  try {
    return toPrompt(question.trim())
  } catch {
    return `${question.trim()}=`
  }
}
/** The user's answer from the model's completion (undoes padding, the count's letter). */
export const userAnswer = (question: string, completion: string): string => {
  try {
    return parse(question.trim(), completion)
  } catch {
    return completion.trim()
  }
}

/** Streamed chunks of the parsed answer: only text that later tokens cannot change is sent. */
async function* parsedStream(question: string, inner: AsyncIterable<GenerateChunk>): AsyncGenerator<GenerateChunk> {
  let raw = ""
  let sent = ""
  let index = 0
  for await (const c of inner) {
    raw += c.text
    if (c.done) {
      const full = userAnswer(question, raw)
      const rest = full.startsWith(sent) ? full.slice(sent.length) : full
      yield { ...c, index: index++, text: rest }
      return
    }
    // a parse of a prefix is safe to send when it is a prefix of the parse of every longer text;
    // for the plain skills (reverse, sort, capital) that is the raw text itself
    const now = userAnswer(question, raw)
    if (now === raw && now.startsWith(sent) && now.length > sent.length) {
      yield { ...c, index: index++, text: now.slice(sent.length) }
      sent = now
    }
  }
}

/**
 * A training record with plain questions and answers (what the coordinator builds from the
 * experts' plain answers) in the model's own format; records that are not questions of a skill
 * (already in the model's format) pass unchanged.
 */
export const toModelRecord = (item: unknown): unknown => {
  if (typeof item !== "object" || item === null) return item
  const r = item as Record<string, unknown>
  const q = typeof r.prompt === "string" ? r.prompt.trim() : undefined
  if (q === undefined || detectSkill(q) === undefined) return item
  const c = (a: unknown) => (typeof a === "string" ? toCompletion(q, a) : a)
  return {
    ...r,
    prompt: toPrompt(q),
    ...("completion" in r ? { completion: c(r.completion) } : {}),
    ...("chosen" in r ? { chosen: c(r.chosen) } : {}),
    ...("rejected" in r ? { rejected: c(r.rejected) } : {}),
    ...(Array.isArray(r.completions) ? { completions: r.completions.map(c) } : {}),
  }
}

/** A model-backed expert that speaks plain questions (the skill's format inside). */
export const skillExpert = (name: string, adapter?: SkillName): AgentDefinition => {
  const def = defineExpert({
    name,
    model: BASE_DIR,
    ...(adapter ? { adapters: { [adapter]: adapterDir(adapter) }, defaultAdapter: adapter } : {}),
    artifacts: path.join(STATE, name),
    description: adapter ? `LoRA expert for "${adapter}" on the shared skills base` : "the generalist base (fallback expert)",
    env: { OMP_NUM_THREADS: process.env.OMP_NUM_THREADS ?? "1" },
  })
  const inner = def.handlers.generate as (req: GenerateRequest, ctx: unknown) => Promise<GenerateResponse> | GenerateResponse | AsyncIterable<GenerateChunk>
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const train = def.handlers.train as VerbHandler<any, any, any, any>
  return {
    ...def,
    handlers: {
      ...def.handlers,
      // preference data arrives in plain questions and answers; the model trains on its format
      train: { ...train, handle: (req: { data: ReadonlyArray<unknown> }, ctx) => train.handle({ ...req, data: req.data.map(toModelRecord) }, ctx) } satisfies typeof train,
      generate: (req: GenerateRequest, ctx: unknown) => {
        const out = inner({ ...req, prompt: modelPrompt(req.prompt) }, ctx)
        if (req.stream) return parsedStream(req.prompt, out as AsyncIterable<GenerateChunk>)
        return Promise.resolve(out as Promise<GenerateResponse>).then((r) => ({ ...r, text: userAnswer(req.prompt, r.text) }))
      },
    },
  } as AgentDefinition
}

/**
 * The router: a Router over the experts above with the committed gate, served on
 * `moa.skills.router.route` (packages/router's service), and the gate published to the
 * cluster's registry so `moa router gate` and other routers see the same version.
 */
const router = defineAgent({
  name: "gate",
  role: "router",
  description: "loads the committed gate and serves moa.skills.router.route (MoE / MoA)",
  setup: async (ctx) => {
    const { Router, Gate, natsExpert, serveRouter, featuresFromSpec, publishGate, ClusterMonitor } = await import("@moa/router")
    const { reward } = await import("@moa/skills")
    const meta = JSON.parse(fs.readFileSync(path.join(GATE_DIR, "gate.json"), "utf8"))
    const gate = Gate.fromSafetensors(meta.config, new Uint8Array(fs.readFileSync(path.join(GATE_DIR, "gate.safetensors"))))
    const features = featuresFromSpec(meta.config.features)
    // the aggregator model is a client too (not in the gate): `aggregator: { kind: "model", expert: "aggregator" }`
    const experts = [...EXPERTS, ...(hasAggregator() ? ["aggregator"] : [])].map((e) => natsExpert(ctx.nc, ctx.cluster, e))
    const r = new Router({
      experts,
      gate: { gate, features, version: meta.version ?? "artifacts" },
      mode: "moe",
      deadlineMs: 20_000,
      scorers: { reward: async (q: string, a: string) => { try { return reward(q, a) } catch { return 0 } } },
    })
    // health from $SRV.STATS: the monitor widens its reply window after a miss (500 ms → 4 s), and
    // an expert is marked down only after 3 missed polls, 5 s without a sign of life and no call
    // in flight (a busy expert on a loaded machine answers late, it is not dead)
    const monitor = new ClusterMonitor(ctx.nc, ctx.cluster, () => r.clientList).start()
    const stopMonitor = () => monitor.stop()
    const svc = await serveRouter(ctx.nc, ctx.cluster, r, { name: "router" })
    await publishGate(ctx.nc, ctx.cluster, gate, { version: meta.version ?? "artifacts", metrics: meta.metrics }).catch((e: Error) => ctx.log.warn({ err: e.message }, "could not publish the gate"))
    return { r, svc, stopMonitor }
  },
  teardown: async (s) => {
    await s.stopMonitor()
    await s.svc.stop().catch(() => {})
  },
  handlers: {
    "gate-info": (_req: unknown, ctx: { state: { r: { gate?: { version: string; gate: { experts: ReadonlyArray<string> } } } } }) => ({
      version: ctx.state.r.gate?.version ?? "none",
      experts: [...(ctx.state.r.gate?.gate.experts ?? [])],
    }),
  },
})

/**
 * The coordinator: preference rounds (ORPO by default: it was the algorithm that raised the
 * weak expert in packages/coordinator's tests) over the five skill experts, on plain questions
 * of each skill, scored by the skill's verifiable reward. Start one from the console
 * (`/round start`, `/round watch`) or with `moa call coordinator round '{"experts":["add"]}'`.
 */
const coordinator = defineCoordinator({
  experts: SKILLS.map((s) => ({ name: s, tasks: plainSkillTasks(s) })),
  algo: "orpo",
  // 1,000 prompts × 8 samples and 1,000 held-out questions cost an expert about a minute a round
  // here; with fewer, a round's pairs and its promotion decision are mostly noise
  prompts: 1000,
  k: 8,
  heldOut: 1000,
  // measured on these r 16 adapters (docs/coordinator.md, "On the skills cluster"): ORPO at
  // 3e-4 over 100 steps of 32 pairs raised a 66% sort expert to 77% in three rounds; DPO wants
  // lr 3e-5 (and its rpoAlpha 1 default), GRPO 3e-4 in batches of 16
  hyper: { maxSteps: 100, learningRate: 3e-4, batchSize: 32 },
  // a candidate must beat the served version by more than 0.5 points on the 1,000 held-out
  // questions: a smaller gain did not hold on a second set (the sort expert: +0.4 points on the
  // promotion set, −0.8 on the second)
  minGain: 0.005,
  // the longest completion inside a model (capital's 27 characters) and the end marker
  maxTokens: Math.max(...SKILLS.map((s) => maxCompletionLength(s))) + 1,
})

export default defineCluster({
  name: "skills",
  // the aggregator model (train-aggregator.ts) joins when it has been trained; the router's
  // `{ kind: "model", expert: "aggregator" }` aggregator asks it
  agents: [...SKILLS.map((s) => skillExpert(s, s)), skillExpert("base"), ...(hasAggregator() ? [aggregatorExpert()] : []), router, coordinator],
})
