// Modes, aggregators and failures against real expert processes on a real nats-server.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { connect } from "@nats-io/transport-node"
import type { NatsConnection } from "@nats-io/nats-core"
import { startNatsServer, type NatsServerHandle } from "@moa/bus/testing"
import { generate, reward, check } from "@moa/skills"
import {
  NoExpertAnswered,
  RouteRequestInvalid,
  Router,
  buildAggregatorDataset,
  formatAggregatorPrompt,
  natsExpert,
  parseAggregatorPrompt,
  type RouteRequest,
} from "../src/index.ts"
import { startRuleExpert, type ExpertProcess } from "./fixtures/cluster.ts"

const CLUSTER = "modes"
let nats: NatsServerHandle
let nc: NatsConnection
const procs: ExpertProcess[] = []
let router: Router
const NOISY = ["n1", "n2", "n3"]
const questions = generate("add", { n: 300, seed: 11, split: "test" })

beforeAll(async () => {
  nats = await startNatsServer({ jetstream: false })
  const base = { nats: nats.url, cluster: CLUSTER }
  // two processes through the real runtime: the noisy trio, and the helpers and failure cases
  procs.push(
    ...(await Promise.all([
      // three add experts, each wrong 30% of the time, independently
      startRuleExpert(NOISY.map((name) => ({ ...base, name, skills: ["add"], errorRate: 0.3 }))),
      startRuleExpert([
        { ...base, name: "agg", skills: "all", aggregator: true },
        { ...base, name: "judge", skills: "all" },
        { ...base, name: "hang", skills: "all", behaviour: "hang" },
        { ...base, name: "broken", skills: "all", behaviour: "error" },
        { ...base, name: "slow", skills: "all", delayMs: 300 },
      ]),
    ])),
  )
  nc = await connect({ servers: nats.url })
  const clients = [...NOISY, "agg", "judge", "hang", "broken", "slow", "ghost"].map((n) => natsExpert(nc, CLUSTER, n))
  router = new Router({ experts: clients, deadlineMs: 2000, scorers: { reward } })
}, 240_000)

afterAll(async () => {
  await nc?.drain()
  await Promise.all(procs.map((p) => p.stop()))
  await nats?.stop()
})

const accuracy = async (req: Omit<RouteRequest, "prompt">) => {
  // 16 requests at a time: the runtime answers OVERLOADED beyond an agent's queue, as it should
  const rs: Awaited<ReturnType<typeof router.route>>[] = []
  for (let i = 0; i < questions.length; i += 16) rs.push(...(await Promise.all(questions.slice(i, i + 16).map((q) => router.route({ ...req, prompt: q.question })))))
  return { acc: rs.filter((r, i) => check(questions[i].answer, r.answer)).length / questions.length, traces: rs.map((r) => r.trace) }
}

describe("modes", () => {
  it("moa with a weighted vote beats every single noisy expert", async () => {
    const singles = await Promise.all(NOISY.map((expert) => accuracy({ mode: "single", expert })))
    for (const s of singles) expect(s.acc).toBeLessThan(0.8)
    const best = Math.max(...singles.map((s) => s.acc))
    const moa = await accuracy({ mode: "moa", proposers: NOISY })
    expect(moa.acc).toBeGreaterThan(best + 0.04)
    const t = moa.traces[0]
    expect(t.layers).toHaveLength(1)
    expect(t.layers[0].candidates.map((c) => c.expert)).toEqual(NOISY)
    expect(t.aggregator.kind).toBe("vote")
    expect(Object.values(t.aggregator.tally!).reduce((a, b) => a + b, 0)).toBe(3)
  })

  it("self-moa: one noisy expert sampled five times at temperature > 0, then voted, beats its greedy answer", async () => {
    const single = await accuracy({ mode: "single", expert: "n1" })
    const self = await accuracy({ mode: "self-moa", expert: "n1", samples: 5, temperature: 0.8, seed: 1 })
    expect(self.acc).toBeGreaterThan(single.acc + 0.1)
    expect(self.traces[0].layers[0].candidates.map((c) => c.sample)).toEqual([0, 1, 2, 3, 4])
  })

  it("best-of-n with the reward function, and with a judge agent, picks a right candidate whenever there is one", async () => {
    const r = await accuracy({ mode: "moa", proposers: NOISY, aggregator: { kind: "best-of-n", scorer: "reward" } })
    const j = await accuracy({ mode: "moa", proposers: NOISY, aggregator: { kind: "best-of-n", scorer: "judge:judge" } })
    const anyRight = r.traces.filter((t, i) => t.layers[0].candidates.some((c) => c.text === questions[i].answer)).length / questions.length
    expect(r.acc).toBeCloseTo(anyRight, 5)
    expect(j.acc).toBeCloseTo(anyRight, 5)
    expect(r.traces[0].aggregator.scores).toHaveLength(3)
  })

  it("an aggregator expert reads the question plus the candidates and writes the answer", async () => {
    const m = await accuracy({ mode: "moa", proposers: NOISY, aggregator: { kind: "model", expert: "agg" } })
    const v = await accuracy({ mode: "moa", proposers: NOISY })
    expect(m.acc).toBeGreaterThanOrEqual(v.acc - 0.05)
    expect(m.traces[0].aggregator).toMatchObject({ kind: "model", expert: "agg" })
  })

  it("later layers see the earlier layer's answers in their prompt", async () => {
    const r = await router.route({ prompt: "add 20 22", mode: "moa", proposers: NOISY, layers: 2 })
    expect(r.trace.layers).toHaveLength(2)
    const p = parseAggregatorPrompt(r.trace.layers[1].prompt)!
    expect(p.question).toBe("add 20 22")
    expect(p.candidates).toEqual(r.trace.layers[0].candidates.map((c) => c.text))
  })
})

describe("failures", () => {
  it("a timed-out, an erroring and an unserved expert are dropped from the layer; the answer still comes", async () => {
    const r = await router.route({ prompt: "add 2 3", mode: "moa", proposers: ["slow", "hang", "broken", "ghost"], deadlineMs: 1000 })
    expect(r.answer).toBe("5")
    const byName = Object.fromEntries(r.trace.layers[0].candidates.map((c) => [c.expert, c]))
    expect(byName.slow).toMatchObject({ ok: true, text: "5" })
    expect(byName.hang).toMatchObject({ ok: false, dropped: "timeout" })
    expect(byName.broken).toMatchObject({ ok: false, dropped: "error" })
    expect(byName.broken.error).toMatch(/broken on purpose/)
    expect(byName.ghost).toMatchObject({ ok: false, dropped: "no-responders" })
  })

  it("when nobody answers, a typed NoExpertAnswered error lists who failed and why", async () => {
    const err = await router.route({ prompt: "add 2 3", mode: "moa", proposers: ["hang", "broken"], deadlineMs: 500 }).catch((e) => e)
    expect(err).toBeInstanceOf(NoExpertAnswered)
    expect(err.failures.map((f: { expert: string }) => f.expert)).toEqual(["hang", "broken"])
    expect(err.message).toMatch(/timeout/)
  })

  it("a failing aggregator expert falls back to a vote, and says so", async () => {
    const r = await router.route({ prompt: "add 2 3", mode: "moa", proposers: NOISY, aggregator: { kind: "model", expert: "broken" } })
    expect(r.trace.aggregator.kind).toBe("vote")
    expect(r.trace.aggregator.fallback).toMatch(/broken/)
  })

  it("bad requests are typed errors that say what to do", async () => {
    await expect(router.route({ prompt: "x", mode: "single", expert: "nobody" })).rejects.toBeInstanceOf(RouteRequestInvalid)
    await expect(router.route({ prompt: "x", mode: "moe" })).rejects.toThrow(/no gate yet.*moa router train/)
  })
})

describe("aggregator training data", () => {
  it("builds prompt/completion pairs from the candidate sets the cluster produced", async () => {
    const rs = await Promise.all(questions.slice(0, 20).map((q) => router.route({ prompt: q.question, mode: "moa", proposers: NOISY })))
    const sets = rs.map((r, i) => ({ question: questions[i].question, answer: questions[i].answer, candidates: r.trace.layers[0].candidates.map((c) => c.text!) }))
    const ds = buildAggregatorDataset(sets, { orders: 2, seed: 3 })
    expect(ds.length).toBeGreaterThanOrEqual(20)
    for (const ex of ds) {
      const p = parseAggregatorPrompt(ex.prompt)!
      expect(p.candidates).toHaveLength(3)
      expect(reward(p.question, ex.completion)).toBe(1)
    }
    expect(formatAggregatorPrompt("add 1 2", ["3", "a | b"])).toBe("add 1 2 | 3 | a / b =")
  })
})
