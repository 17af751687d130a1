// npm run bench:router — the router's numbers on a live cluster of rule-based runtime agents:
// gate routing (n-gram vs pooled hidden-state features), accuracy of each mode on a mixed
// held-out set, aggregators per skill, router overhead and parallel fan-out vs direct calls.
//
// Experts here are rule-based agents with configured error rates (real runtime processes on a
// real nats-server), so accuracy numbers measure the router's logic, not a model's skill.
import { connect } from "@nats-io/transport-node"
import { startNatsServer } from "@moa/bus/testing"
import { SKILLS, check, reward } from "@moa/skills"
import { CharTokenizer, GPT, makeConfig } from "@moa/model"
import {
  Router,
  askRouter,
  collectOutcomes,
  defaultGateConfig,
  evaluateRouting,
  fitGate,
  natsExpert,
  ngramFeatures,
  pooledHiddenFeatures,
  skillPrompts,
  startRouterAgent,
  type RouteRequest,
} from "../src/index.ts"
import { startRuleExpert } from "../test/fixtures/cluster.ts"

const N_TRAIN = Number(process.env.N_TRAIN ?? 40)
const N_TEST = Number(process.env.N_TEST ?? 40)
const N_LAT = Number(process.env.N_LAT ?? 100)
const C = "bench"
const pct = (x: number) => `${(100 * x).toFixed(1)}%`
const ms = (x: number) => `${x.toFixed(2)} ms`
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const p90 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.9)]
const out: string[] = []
const say = (s = "") => {
  out.push(s)
  process.stdout.write(`${s}\n`)
}

const nats = await startNatsServer({ jetstream: true })
const base = { nats: nats.url, cluster: C }
const procs = await Promise.all([
  startRuleExpert([
    ...SKILLS.map((s) => ({ ...base, name: s, skills: [s], errorRate: 0.05 })),
    { ...base, name: "base", skills: "all" as const, errorRate: 0.5 },
  ]),
  startRuleExpert([20, 40, 60].map((d) => ({ ...base, name: `d${d}`, skills: "all" as const, delayMs: d }))),
  startRuleExpert([
    ...["n1", "n2", "n3"].map((name) => ({ ...base, name, skills: "all" as const, errorRate: 0.3 })),
    { ...base, name: "agg", skills: "all" as const, aggregator: true },
    { ...base, name: "judge", skills: "all" as const },
  ]),
])
const nc = await connect({ servers: nats.url })
const EXPERTS = [...SKILLS, "base"]
const skillClients = EXPERTS.map((e) => natsExpert(nc, C, e))
const all = [...EXPERTS, "d20", "d40", "d60", "n1", "n2", "n3", "agg", "judge"].map((e) => natsExpert(nc, C, e))

try {
  say(`# router benchmark (${new Date().toISOString()}, ${N_TRAIN} train / ${N_TEST} held-out questions per skill)`)
  // ---- 1. gate ------------------------------------------------------------------------------
  const train = skillPrompts({ n: N_TRAIN, split: "train", seed: 1 })
  const test = skillPrompts({ n: N_TEST, split: "test", seed: 2 })
  let t0 = performance.now()
  const outcomes = await collectOutcomes(train, skillClients, { deadlineMs: 10_000 })
  const collectMs = performance.now() - t0
  const labelled = test.map((p) => ({ prompt: p.prompt, expert: p.skill!, skill: p.skill }))
  const ngram = ngramFeatures({ dim: 512 })
  t0 = performance.now()
  const { gate } = await fitGate(outcomes, defaultGateConfig(EXPERTS, ngram.spec), ngram, { epochs: 30 })
  const fitMs = performance.now() - t0
  const rNgram = await evaluateRouting(gate, ngram, labelled)
  // pooled hidden states of a small GPT (random init: no trained base checkpoint is committed yet)
  const tok = new CharTokenizer([...new Set([...train, ...test].flatMap((p) => [...p.prompt]))].sort())
  const gpt = new GPT(makeConfig({ vocabSize: tok.vocabSize, contextLength: 64, dModel: 64, nLayers: 2, nHeads: 4 }))
  const hiddenF = pooledHiddenFeatures(gpt, tok)
  const { gate: gH } = await fitGate(outcomes, defaultGateConfig(EXPERTS, hiddenF.spec), hiddenF, { epochs: 30 })
  const rHidden = await evaluateRouting(gH, hiddenF, labelled)
  say("\n## Gate routing (held-out, expected expert = the skill's expert)\n")
  say("| features | top-1 | top-2 | load-balance loss | " + SKILLS.join(" | ") + " |")
  say("|---|---|---|---|" + SKILLS.map(() => "---").join("|") + "|")
  for (const [name, r] of [["hashed char n-grams (512)", rNgram], ["mean hidden state, random-init GPT d64 L2", rHidden]] as const)
    say(`| ${name} | ${pct(r.top1)} | ${pct(r.top2)} | ${r.lbLoss.toFixed(3)} | ${SKILLS.map((s) => pct(r.perSkill[s]?.top1 ?? 0)).join(" | ")} |`)
  say(`\nload (share of top-1, n-gram gate): ${Object.entries(rNgram.load).map(([e, v]) => `${e} ${pct(v)}`).join(", ")}`)
  say(`collecting ${train.length} prompts × ${EXPERTS.length} experts: ${(collectMs / 1000).toFixed(1)} s; fitting the n-gram gate: ${(fitMs / 1000).toFixed(1)} s`)

  // ---- 2. modes on the mixed held-out set ---------------------------------------------------
  const router = new Router({ experts: all, gate: { gate, features: ngram, version: "bench" }, deadlineMs: 10_000, scorers: { reward } })
  const accuracy = async (req: Omit<RouteRequest, "prompt">) => {
    const per: Record<string, { n: number; right: number }> = {}
    const lat: number[] = []
    for (let i = 0; i < test.length; i += 16) {
      const batch = test.slice(i, i + 16)
      const rs = await Promise.all(batch.map((q) => router.route({ ...req, prompt: q.prompt })))
      rs.forEach((r, j) => {
        const s = batch[j].skill!
        per[s] ??= { n: 0, right: 0 }
        per[s].n++
        if (check(batch[j].answer, r.answer)) per[s].right++
        lat.push(r.trace.totalLatencyMs)
      })
    }
    const n = Object.values(per).reduce((a, b) => a + b.n, 0)
    const right = Object.values(per).reduce((a, b) => a + b.right, 0)
    return { all: right / n, per: Object.fromEntries(Object.entries(per).map(([s, v]) => [s, v.right / v.n])), p50: median(lat) }
  }
  say("\n## Accuracy on the mixed held-out set (exact match)\n")
  say("| mode | mixed | " + SKILLS.join(" | ") + " | p50 latency |")
  say("|---|---|" + SKILLS.map(() => "---").join("|") + "|---|")
  const row = (name: string, a: Awaited<ReturnType<typeof accuracy>>) => say(`| ${name} | ${pct(a.all)} | ${SKILLS.map((s) => pct(a.per[s] ?? 0)).join(" | ")} | ${ms(a.p50)} |`)
  for (const e of EXPERTS) row(`single: ${e}`, await accuracy({ mode: "single", expert: e }))
  row("moe (k=1)", await accuracy({ mode: "moe" }))
  row("moe (k=2, weighted vote)", await accuracy({ mode: "moe", k: 2 }))
  row("moa (gate top-3, vote)", await accuracy({ mode: "moa", k: 3 }))
  row("self-moa (gate top-1, 5 samples, T=0.8, vote)", await accuracy({ mode: "self-moa", samples: 5, temperature: 0.8, seed: 7 }))

  // ---- 3. aggregators over three 30%-noisy generalists ----------------------------------------
  say("\n## Aggregators over three generalists each wrong 30% of the time (moa, proposers n1,n2,n3)\n")
  say("| aggregator | mixed | " + SKILLS.join(" | ") + " |")
  say("|---|---|" + SKILLS.map(() => "---").join("|") + "|")
  const arow = (name: string, a: Awaited<ReturnType<typeof accuracy>>) => say(`| ${name} | ${pct(a.all)} | ${SKILLS.map((s) => pct(a.per[s] ?? 0)).join(" | ")} |`)
  arow("single n1 (greedy)", await accuracy({ mode: "single", expert: "n1" }))
  arow("weighted vote", await accuracy({ mode: "moa", proposers: ["n1", "n2", "n3"] }))
  arow("best-of-n, reward function", await accuracy({ mode: "moa", proposers: ["n1", "n2", "n3"], aggregator: { kind: "best-of-n", scorer: "reward" } }))
  arow("best-of-n, judge agent", await accuracy({ mode: "moa", proposers: ["n1", "n2", "n3"], aggregator: { kind: "best-of-n", scorer: "judge:judge" } }))
  arow("aggregator expert (rule: majority of candidates)", await accuracy({ mode: "moa", proposers: ["n1", "n2", "n3"], aggregator: { kind: "model", expert: "agg" } }))
  arow("self-moa n1 (5 samples, vote)", await accuracy({ mode: "self-moa", expert: "n1", samples: 5, temperature: 0.8, seed: 3 }))

  // ---- 4. overhead and fan-out ----------------------------------------------------------------
  const agent = await startRouterAgent({ nats: nats.url, cluster: C, experts: all.map((c) => c.name) })
  agent.router.setGate({ gate, features: ngram, version: "bench" })
  const d20 = all.find((c) => c.name === "d20")!
  const timeIt = async (f: () => Promise<unknown>) => {
    for (let i = 0; i < 5; i++) await f() // warm-up
    const xs: number[] = []
    for (let i = 0; i < N_LAT; i++) {
      const s = performance.now()
      await f()
      xs.push(performance.now() - s)
    }
    return xs
  }
  // direct and routed calls interleaved (A, B, A, B, …) so both see the same machine load;
  // overhead = median of the per-pair differences
  const paired = async (direct: () => Promise<unknown>, routed: () => Promise<unknown>) => {
    for (let i = 0; i < 5; i++) await direct(), await routed()
    const a: number[] = []
    const b: number[] = []
    const d: number[] = []
    for (let i = 0; i < N_LAT; i++) {
      let s = performance.now()
      await direct()
      const x = performance.now() - s
      s = performance.now()
      await routed()
      const y = performance.now() - s
      a.push(x)
      b.push(y)
      d.push(y - x)
    }
    return { direct: a, routed: b, overhead: median(d) }
  }
  const sortClient = skillClients.find((c) => c.name === "sort")!
  const callSort = () => sortClient.generate({ prompt: "sort dcba" }, { deadlineMs: 5000 })
  const single0 = await paired(callSort, () => router.route({ prompt: "sort dcba", mode: "single", expert: "sort" }))
  const moe0 = await paired(callSort, () => router.route({ prompt: "sort dcba", mode: "moe" }))
  const agent0 = await paired(callSort, () => askRouter(nc, C, { prompt: "sort dcba", mode: "moe" }))
  const callD20 = () => d20.generate({ prompt: "sort dcba" }, { deadlineMs: 5000 })
  const routed20 = await paired(callD20, () => router.route({ prompt: "sort dcba", mode: "single", expert: "d20" }))
  const direct20 = routed20.direct
  say("\n## Router overhead (" + N_LAT + " pairs of sequential requests, direct and routed interleaved)\n")
  say("| path | direct median | routed median | routed p90 | overhead (median of pair differences) |")
  say("|---|---|---|---|---|")
  const orow = (name: string, r: Awaited<ReturnType<typeof paired>>) => say(`| ${name} | ${ms(median(r.direct))} | ${ms(median(r.routed))} | ${ms(p90(r.routed))} | ${ms(r.overhead)} |`)
  orow("router in-process, single → `sort` (0 ms work)", single0)
  orow("router in-process, moe: n-gram gate + call → `sort`", moe0)
  orow("router agent over NATS, moe → `sort` (one more NATS hop)", agent0)
  orow("router in-process, single → `d20` (20 ms work)", routed20)

  const dd = await Promise.all([40, 60].map((d) => timeIt(() => all.find((c) => c.name === `d${d}`)!.generate({ prompt: "add 1 2" }, { deadlineMs: 5000 }))))
  const fan = await timeIt(() => router.route({ prompt: "add 1 2", mode: "moa", proposers: ["d20", "d40", "d60"] }))
  const sumDirect = median(direct20) + median(dd[0]) + median(dd[1])
  const slowest = median(dd[1])
  say("\n## Parallel fan-out (moa layer with d20, d40, d60)\n")
  say("| | median |")
  say("|---|---|")
  say(`| direct d20 / d40 / d60 | ${ms(median(direct20))} / ${ms(median(dd[0]))} / ${ms(median(dd[1]))} |`)
  say(`| sum of the three (sequential would cost) | ${ms(sumDirect)} |`)
  say(`| moa layer of the three through the router | ${ms(median(fan))} |`)
  say(`| fan-out efficiency = slowest / routed layer | ${pct(slowest / median(fan))} |`)
  say(`| speed-up over sequential = sum / routed layer | ${(sumDirect / median(fan)).toFixed(2)}× |`)
  await agent.stop()
} finally {
  await nc.drain().catch(() => {})
  await Promise.all(procs.map((p) => p.stop()))
  await nats.stop()
}
