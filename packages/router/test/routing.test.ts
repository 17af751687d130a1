// The gate trained on the cluster's own answers, against real expert processes on a real nats-server.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { connect } from "@nats-io/transport-node"
import type { NatsConnection } from "@nats-io/nats-core"
import { startNatsServer, type NatsServerHandle } from "@moa/bus/testing"
import { SKILLS, allCapitals, generate, type Example } from "@moa/skills"
import {
  ClusterMonitor,
  Router,
  askRouter,
  collectOutcomes,
  defaultGateConfig,
  discoverExperts,
  evaluateRouting,
  fitGate,
  loadGate,
  natsExpert,
  ngramFeatures,
  publishGate,
  serveRouter,
  watchGate,
  type GateBundle,
} from "../src/index.ts"
import { startRuleExpert, type ExpertProcess } from "./fixtures/cluster.ts"

const CLUSTER = "routing"
const EXPERTS = [...SKILLS, "base"]
let nats: NatsServerHandle
let nc: NatsConnection
const procs: ExpertProcess[] = []

const skillSet = (split: "train" | "test", n: number, seed: number): Example[] =>
  SKILLS.flatMap((skill) => (skill === "capital" ? allCapitals().filter((_, i) => (i >> 1) % 5 === seed % 5).slice(0, n) : generate(skill, { n, seed, split })))

beforeAll(async () => {
  nats = await startNatsServer({ jetstream: true })
  const started = await Promise.all([
    // each skill expert: right 97% on its own skill, "?" on the others; "reverse" in a process
    // of its own (a test kills it), the others share one process (each its own agent/service)
    ...["reverse"].map((s) => startRuleExpert({ nats: nats.url, cluster: CLUSTER, name: s, skills: [s], errorRate: 0.03 })),
    startRuleExpert([
      ...SKILLS.filter((s) => s !== "reverse").map((s) => ({ nats: nats.url, cluster: CLUSTER, name: s, skills: [s], errorRate: 0.03 })),
      // the generalist: knows every skill, wrong half of the time
      { nats: nats.url, cluster: CLUSTER, name: "base", skills: "all" as const, errorRate: 0.5 },
    ]),
  ])
  procs.push(...started)
  nc = await connect({ servers: nats.url })
}, 240_000)

afterAll(async () => {
  await nc?.drain()
  await Promise.all(procs.map((p) => p.stop()))
  await nats?.stop()
})

let trained: GateBundle
const features = ngramFeatures({ dim: 512 })

describe("router on a live cluster", () => {
  it("discovers the experts through $SRV.INFO", async () => {
    // on a loaded machine one round may miss a slow replica: ask again, as the agent does
    let found = await discoverExperts(nc, CLUSTER)
    for (let i = 0; i < 5 && found.length < EXPERTS.length; i++) found = await discoverExperts(nc, CLUSTER, { waitMs: 2000 })
    expect(found.map((c) => c.name).sort()).toEqual([...EXPERTS].sort())
  })

  it("trains the gate from the experts' own answers and routes ≥ 99% of held-out questions to their skill's expert", async () => {
    const clients = EXPERTS.map((e) => natsExpert(nc, CLUSTER, e))
    const train = skillSet("train", 40, 1).map((e) => ({ prompt: e.question, answer: e.answer, skill: e.skill }))
    const outcomes = await collectOutcomes(train, clients, { deadlineMs: 5000 })
    // the cluster's answers were really scored: each expert is right on its skill, the base half the time
    const acc = (expert: string, skill: string) => {
      const os = outcomes.filter((o) => o.skill === skill)
      return os.filter((o) => o.results[expert].score === 1).length / os.length
    }
    expect(acc("add", "add")).toBeGreaterThan(0.85)
    expect(acc("add", "sort")).toBe(0)
    expect(acc("base", "sort")).toBeLessThan(0.75)
    const { gate, history } = await fitGate(outcomes, defaultGateConfig(EXPERTS, features.spec), features, { epochs: 30 })
    expect(history.at(-1)!.ce).toBeLessThan(history[0].ce)
    const heldOut = skillSet("test", 60, 2)
    const report = await evaluateRouting(gate, features, heldOut.map((e) => ({ prompt: e.question, expert: e.skill, skill: e.skill })))
    expect(report.top1).toBeGreaterThanOrEqual(0.99)
    expect(report.top2).toBeGreaterThanOrEqual(report.top1)
    trained = { gate, features, version: "t1" }
  }, 120_000)

  it("moe mode answers held-out questions as well as the right expert, with a full trace", async () => {
    const clients = EXPERTS.map((e) => natsExpert(nc, CLUSTER, e))
    const router = new Router({ experts: clients, gate: trained, deadlineMs: 5000 })
    const qs = skillSet("test", 12, 3)
    let right = 0
    for (const q of qs) {
      const r = await router.route({ prompt: q.question, mode: "moe" })
      if (r.answer === q.answer) right++
      expect(r.trace.mode).toBe("moe")
      expect(r.trace.gate!.chosen).toEqual([q.skill])
      expect(Object.keys(r.trace.gate!.probs).sort()).toEqual([...EXPERTS].sort())
      expect(r.trace.layers[0].candidates[0]).toMatchObject({ expert: q.skill, ok: true })
      expect(r.trace.layers[0].candidates[0].latencyMs).toBeGreaterThan(0)
      expect(r.trace.layers[0].candidates[0].tokens).toBeGreaterThan(0)
      expect(r.trace.totalLatencyMs).toBeGreaterThanOrEqual(r.trace.layers[0].latencyMs)
    }
    expect(right / qs.length).toBeGreaterThan(0.85)
  })

  it("stores gate versions in the cluster and the router agent hot-reloads a new one", async () => {
    const p1 = await publishGate(nc, CLUSTER, trained.gate, { version: "v1", metrics: { top1: 1 } })
    const loaded = await loadGate(nc, CLUSTER)
    expect(loaded!.version).toBe("v1")
    const router = new Router({ experts: EXPERTS.map((e) => natsExpert(nc, CLUSTER, e)), deadlineMs: 5000 })
    const versions: string[] = []
    const stop = await watchGate(nc, CLUSTER, (b) => {
      router.setGate(b)
      versions.push(b.version)
    })
    const svc = await serveRouter(nc, CLUSTER, router)
    await until(() => router.gate?.version === "v1")
    const a = await askRouter(nc, CLUSTER, { prompt: "add 12 30", mode: "moe" })
    expect(a.answer).toBe("42")
    expect(a.trace.gate!.version).toBe(p1.version)
    // v2: a gate trained to send everything to the generalist — visibly different routing
    const all = skillSet("train", 10, 4).map((e) => ({ prompt: e.question, answer: e.answer, skill: e.skill, results: Object.fromEntries(EXPERTS.map((x) => [x, { score: x === "base" ? 1 : 0, latencyMs: 0 }])) }))
    const { gate: g2 } = await fitGate(all, defaultGateConfig(EXPERTS, features.spec), features, { epochs: 20 })
    await publishGate(nc, CLUSTER, g2, { version: "v2" })
    await until(() => router.gate?.version === "v2")
    const b = await askRouter(nc, CLUSTER, { prompt: "add 12 30", mode: "moe" })
    expect(b.trace.gate!.version).toBe("v2")
    expect(b.trace.gate!.chosen).toEqual(["base"])
    expect(versions).toEqual(["v1", "v2"])
    // a bad request gets a typed error reply naming the field, not a crash
    await expect(askRouter(nc, CLUSTER, { prompt: "add 1 2", mode: "bogus" as never })).rejects.toThrow(/400.*mode/)
    await stop()
    await svc.stop()
  }, 60_000)

  it("a dead expert gets nothing: the gate sends its questions to the next best alive expert", async () => {
    // no grace period, so the test needs no waiting: down after 3 polls in a row without a replica
    const clients = EXPERTS.map((e) => natsExpert(nc, CLUSTER, e, { health: { missesToDown: 3, graceMs: 0 } }))
    const router = new Router({ experts: clients, gate: trained, deadlineMs: 3000 })
    const monitor = new ClusterMonitor(nc, CLUSTER, () => clients)
    for (let i = 0; i < 5 && !clients.every((c) => c.seen); i++) await monitor.poll()
    const before = await router.route({ prompt: "reverse abcdef", mode: "moe" })
    expect(before.trace.gate!.chosen).toEqual(["reverse"])
    await procs.find((p) => p.name === "reverse")!.stop()
    const reverse = clients.find((c) => c.name === "reverse")!
    await monitor.poll()
    await monitor.poll()
    expect(reverse.stats()).toMatchObject({ healthy: true, missedPolls: 2 }) // missed polls are not death yet
    await monitor.poll()
    expect(reverse.stats().healthy).toBe(false)
    const after = await router.route({ prompt: "reverse abcdef", mode: "moe" })
    expect(after.trace.gate!.adjusted.reverse).toBe(0)
    expect(after.trace.gate!.chosen).not.toContain("reverse")
    expect(after.trace.layers[0].candidates[0].ok).toBe(true)
  })
})

const until = async (f: () => boolean, ms = 10_000) => {
  const t0 = Date.now()
  while (!f()) {
    if (Date.now() - t0 > ms) throw new Error("condition not reached in time")
    await new Promise((r) => setTimeout(r, 50))
  }
}
