/**
 * The router on the real skills cluster: a nats-server, the cluster's model-backed experts as
 * processes (`moa up examples/skills/cluster.ts --only …`: the five LoRA experts, the base, and
 * the aggregator model when one is trained), and a Router with the committed gate. Measures on a
 * mixed held-out set, per skill:
 *   - each single expert, and "the right expert" (each question asked to its skill's expert);
 *   - moe (the gate's top-1): the issue wants it within 2 points of the right expert on each skill;
 *   - moa (the gate's top-k, one layer, gate-weighted vote) and self-moa (the gate's top-1 sampled
 *     n times at T, vote): the issue wants one of them above the best single expert on the mix;
 *   - the aggregators on the same candidate sets (moa's and self-moa's): weighted vote, best-of-n by
 *     the reward function, and the aggregator model (asked over NATS), and which wins on which skill.
 * Writes the tables into docs/router.md (between the skills-cluster markers) and the raw numbers to
 * packages/router/bench/results/skills-cluster.json.
 *
 *   npm run bench:router:skills                      # 40 questions per skill
 *   npm run bench:router:skills -- --n 20 --no-doc   # quicker, print only
 *
 * Options: --n (held-out questions per skill, default 40), --k (moa proposers, 3), --samples (5),
 * --temperatures (self-moa's, comma-separated, default 0.3,0.8), --concurrency (requests in flight, 8), --deadline-ms (per expert call, 60000),
 * --no-doc, --no-aggregator (skip the aggregator model even if trained).
 */
import { spawn, type ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import { connect } from "@nats-io/transport-node"
import { startNatsServer } from "@moa/bus/testing"
import { SKILLS, generate as skillQuestions, allCapitals, reward, type Example } from "@moa/skills"
import { initBackend, loadCheckpoint } from "@moa/model"
import {
  ClusterMonitor,
  Gate,
  Router,
  defaultGateConfig,
  evaluateRouting,
  ngramFeatures,
  pooledHiddenFeatures,
  trainGate,
  aggregateWithModel,
  bestOfN,
  featuresFromSpec,
  natsExpert,
  normalizeAnswer,
  weightedVote,
  type Candidate,
  type RouteRequest,
  type RouteResponse,
} from "@moa/router"
import { hasAggregator, AGGREGATOR_DIR } from "./aggregator.ts"

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, "../..")
const { values } = parseArgs({
  options: {
    n: { type: "string", default: "40" },
    k: { type: "string", default: "3" },
    samples: { type: "string", default: "5" },
    temperatures: { type: "string", default: "0.3,0.8" },
    concurrency: { type: "string", default: "8" },
    "deadline-ms": { type: "string", default: "60000" },
    "no-doc": { type: "boolean", default: false },
    "no-aggregator": { type: "boolean", default: false },
  },
})
const fail = (m: string): never => {
  process.stderr.write(`bench:router:skills: ${m}\n`)
  process.exit(2)
}
const int = (name: string, v: string | undefined, lo: number, hi: number): number => {
  const x = Number(v)
  if (!(Number.isInteger(x) && x >= lo && x <= hi)) fail(`--${name} must be an integer in ${lo}..${hi}, got "${v}"`)
  return x
}
const N = int("n", values.n, 1, 1000)
const K = int("k", values.k, 1, 6)
const SAMPLES = int("samples", values.samples, 1, 9)
const CONC = int("concurrency", values.concurrency, 1, 64)
const DEADLINE = int("deadline-ms", values["deadline-ms"], 100, 600_000)
const TS = (values.temperatures ?? "").split(",").filter(Boolean).map(Number)
if (TS.length === 0 || !TS.every((t) => t > 0 && t <= 10)) fail(`--temperatures must be numbers in (0, 10], comma-separated, got "${values.temperatures}"`)

const ARTIFACTS = path.join(here, "artifacts")
const EXPERTS = [...SKILLS, "base"]
const useAggregator = !values["no-aggregator"] && hasAggregator()
const pct = (x: number) => `${(100 * x).toFixed(1)}%`
const median = (xs: number[]) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]! : 0)
const log = (s: string) => process.stderr.write(`${s}\n`)

/** Held-out questions: the skills' test split; capital: a spread of the fact questions (recall is the task). */
const questions: Example[] = SKILLS.flatMap((s) => {
  if (s !== "capital") return skillQuestions(s, { n: N, seed: 2, split: "test", unique: true })
  const caps = allCapitals()
  // an odd step takes both forms of the facts; offset 1 keeps clear of the aggregator's training questions (offset 0)
  const step = Math.max(1, Math.floor(caps.length / N) - (Math.floor(caps.length / N) % 2 === 0 ? 1 : 0))
  return caps.filter((_, i) => i % step === (step > 1 ? 1 : 0)).slice(0, N)
})

// ---------------------------------------------------------------- gate features on the trained base
// The issue asks which gate input works better: hashed character n-grams, or the base model's
// pooled hidden states. Both gates are fitted the same way on the same labelled training
// questions (as train.ts fits the committed gate) and measured on this run's held-out questions.
const t0 = Date.now()
const featureRows: Array<{ name: string; top1: number; top2: number; per: Record<string, number>; msPerPrompt: number }> = []
{
  await initBackend(undefined)
  const { model, tokenizer } = loadCheckpoint(path.join(ARTIFACTS, "base"))
  const held = new Set(questions.map((q) => q.question))
  const train = SKILLS.flatMap((s) => (s === "capital" ? allCapitals() : skillQuestions(s, { n: 300, seed: 1, split: "train" })).filter((e) => !held.has(e.question)))
  const test = questions.map((q) => ({ prompt: q.question, expert: q.skill, skill: q.skill }))
  const y = train.map((e) => EXPERTS.map((x) => (x === e.skill ? 1 : 0)))
  for (const [name, f] of [
    ["hashed char n-grams (512 buckets)", ngramFeatures({ dim: 512 })],
    [`mean last hidden state of the trained skills base (d${model.config.dModel}, ${model.config.nLayers} layers)`, pooledHiddenFeatures(model, tokenizer)],
  ] as const) {
    const s0 = performance.now()
    const x = await f.extract(train.map((e) => e.question))
    const msPerPrompt = (performance.now() - s0) / train.length
    const g = new Gate(defaultGateConfig(EXPERTS, f.spec, { k: 1 }), 1)
    await trainGate(g, x, y, { epochs: 100 })
    const r = await evaluateRouting(g, f, test)
    featureRows.push({ name, top1: r.top1, top2: r.top2, per: Object.fromEntries(SKILLS.map((s) => [s, r.perSkill[s]?.top1 ?? 0])), msPerPrompt })
    g.dispose()
  }
  model.dispose()
  log(`gate features compared in ${((Date.now() - t0) / 1000).toFixed(0)} s`)
}

// ---------------------------------------------------------------- the cluster
const nats = await startNatsServer({ jetstream: true })
const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "moa-router-eval-"))
const agents = [...EXPERTS, ...(useAggregator ? ["aggregator"] : [])]
log(`starting ${agents.join(", ")} (moa up examples/skills/cluster.ts) on ${nats.url} …`)
const up: ChildProcess = spawn(process.execPath, [path.join(root, "packages/cli/bin/moa.js"), "up", path.join(here, "cluster.ts"), "--nats", nats.url, "--only", agents.join(",")], {
  cwd: root,
  env: { ...process.env, MOA_STATE_DIR: stateDir, MOA_NATS_URL: "" },
  stdio: ["ignore", "pipe", "pipe"],
})
let upOut = ""
up.stdout!.on("data", (d) => (upOut += d))
up.stderr!.on("data", (d) => (upOut += d))
const stopCluster = async () => {
  if (up.exitCode === null && up.signalCode === null) {
    const gone = new Promise<void>((r) => up.once("exit", () => r()))
    up.kill("SIGTERM")
    const t = setTimeout(() => up.kill("SIGKILL"), 30_000)
    await gone
    clearTimeout(t)
  }
  await nats.stop()
  fs.rmSync(stateDir, { recursive: true, force: true })
}
process.on("SIGINT", () => void stopCluster().then(() => process.exit(130)))
// whatever goes wrong later, the cluster and the nats-server are not left behind
const bail = (e: unknown) => {
  process.stderr.write(`bench:router:skills: ${(e as Error)?.stack ?? String(e)}\n`)
  void stopCluster().finally(() => process.exit(1))
}
process.on("uncaughtException", bail)
process.on("unhandledRejection", bail)
process.on("exit", () => {
  // last resort (an exit we did not plan): signal the supervisor and the server synchronously
  if (up.exitCode === null && up.signalCode === null) up.kill("SIGTERM")
  const pid = nats.pid()
  if (pid !== undefined) {
    try {
      process.kill(pid, "SIGTERM")
    } catch {
      // already gone
    }
  }
})
await new Promise<void>((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error(`the cluster did not come up in 10 minutes:\n${upOut.slice(-3000)}`)), 600_000)
  const check = () => {
    if (/cluster "skills" is up/.test(upOut)) {
      clearTimeout(timer)
      resolve()
    }
  }
  up.stdout!.on("data", check)
  up.once("exit", (code) => {
    clearTimeout(timer)
    reject(new Error(`moa up exited with ${code}:\n${upOut.slice(-3000)}`))
  })
}).catch(async (e) => {
  await stopCluster()
  fail((e as Error).message)
})
const startSec = (Date.now() - t0) / 1000
log(`cluster up in ${startSec.toFixed(0)} s`)

const nc = await connect({ servers: nats.url })
const clients = agents.map((e) => natsExpert(nc, "skills", e))
const monitor = new ClusterMonitor(nc, "skills", () => clients)
for (let i = 0; i < 10 && !clients.every((c) => c.seen); i++) await monitor.poll()
monitor.start()
const meta = JSON.parse(fs.readFileSync(path.join(ARTIFACTS, "gate", "gate.json"), "utf8"))
const gate = Gate.fromSafetensors(meta.config, new Uint8Array(fs.readFileSync(path.join(ARTIFACTS, "gate", "gate.safetensors"))))
const router = new Router({
  experts: clients,
  gate: { gate, features: featuresFromSpec(meta.config.features), version: meta.version ?? "artifacts" },
  deadlineMs: DEADLINE,
  scorers: { reward: (q: string, a: string) => { try { return reward(q, a) } catch { return 0 } } },
})

// ---------------------------------------------------------------- runs
interface Run {
  readonly answers: string[]
  readonly traces: RouteResponse["trace"][]
  readonly latency: number[]
  readonly dropped: number
}
const runAll = async (name: string, req: Omit<RouteRequest, "prompt">): Promise<Run> => {
  const s0 = Date.now()
  const answers: string[] = new Array(questions.length)
  const traces: RouteResponse["trace"][] = new Array(questions.length)
  let next = 0
  let dropped = 0
  const worker = async () => {
    while (next < questions.length) {
      const i = next++
      const r = await router.route({ ...req, prompt: questions[i]!.question }).catch((e) => ({ answer: `(error: ${(e as Error).message})`, trace: undefined }))
      answers[i] = r.answer
      if (r.trace) {
        traces[i] = r.trace
        dropped += r.trace.layers.reduce((a, l) => a + l.candidates.filter((c) => !c.ok).length, 0)
      } else dropped++
    }
  }
  await Promise.all(Array.from({ length: CONC }, worker))
  log(`${name}: ${((Date.now() - s0) / 1000).toFixed(0)} s${dropped ? `, ${dropped} candidates dropped` : ""}`)
  return { answers, traces, latency: traces.filter(Boolean).map((t) => t.totalLatencyMs), dropped }
}
const right = (i: number, a: string) => normalizeAnswer(a) === normalizeAnswer(questions[i]!.answer)
interface Acc {
  readonly mixed: number
  readonly per: Record<string, number>
  readonly p50?: number
  readonly dropped?: number
}
const accOf = (answers: ReadonlyArray<string>, extra: { latency?: number[]; dropped?: number } = {}): Acc => {
  const per: Record<string, number> = {}
  for (const s of SKILLS) {
    const idx = questions.map((_, i) => i).filter((i) => questions[i]!.skill === s)
    per[s] = idx.filter((i) => right(i, answers[i]!)).length / idx.length
  }
  return { mixed: questions.filter((_, i) => right(i, answers[i]!)).length / questions.length, per, p50: extra.latency ? median(extra.latency) : undefined, dropped: extra.dropped }
}

const rows: Array<[string, Acc]> = []
const singles: Record<string, Run> = {}
for (const e of EXPERTS) {
  singles[e] = await runAll(`single ${e}`, { mode: "single", expert: e })
  rows.push([`single: ${e}`, accOf(singles[e]!.answers, singles[e])])
}
const oracle = questions.map((q, i) => singles[q.skill]!.answers[i]!)
const oracleAcc = accOf(oracle)
rows.push(["the right expert (each question to its skill's expert)", oracleAcc])
const moe = await runAll("moe", { mode: "moe", k: 1 })
const moeAcc = accOf(moe.answers, moe)
rows.push(["moe (gate top-1)", moeAcc])
const moa = await runAll("moa", { mode: "moa", k: K })
rows.push([`moa (gate top-${K}, gate-weighted vote)`, accOf(moa.answers, moa)])
const selfRuns: Array<[number, Run]> = []
for (const T of TS) {
  const r = await runAll(`self-moa T=${T}`, { mode: "self-moa", samples: SAMPLES, temperature: T, seed: 7 })
  selfRuns.push([T, r])
  rows.push([`self-moa (gate top-1, ${SAMPLES} samples, T=${T}, vote)`, accOf(r.answers, r)])
}
const routedRight = questions.filter((q, i) => moe.traces[i]?.gate?.chosen[0] === q.skill).length / questions.length

// the aggregators on the same candidate sets
const candidatesOf = (t: RouteResponse["trace"] | undefined): Candidate[] =>
  (t?.layers.at(-1)?.candidates ?? []).filter((c) => c.ok).map((c) => ({ expert: c.expert, text: c.text ?? "", weight: c.weight ?? 1 }))
const aggregators = async (kind: string, run: Run) => {
  const sets = questions.map((_, i) => candidatesOf(run.traces[i]))
  const vote = sets.map((c) => (c.length ? weightedVote(c).answer : ""))
  const best = await Promise.all(sets.map((c, i) => (c.length ? bestOfN(questions[i]!.question, c, (q, a) => { try { return reward(q, a) } catch { return 0 } }).then((b) => b.answer) : "")))
  const anyRight = sets.map((c, i) => (c.some((x) => right(i, x.text)) ? questions[i]!.answer : ""))
  const out: Array<[string, Acc]> = [
    ["weighted vote", accOf(vote)],
    ["best-of-n (reward function)", accOf(best)],
  ]
  if (useAggregator) {
    const agg = clients.find((c) => c.name === "aggregator")!
    const model: string[] = new Array(sets.length)
    const lat: number[] = []
    let failed = 0
    let next = 0
    const s0 = Date.now()
    await Promise.all(
      Array.from({ length: CONC }, async () => {
        while (next < sets.length) {
          const i = next++
          if (!sets[i]!.length) {
            model[i] = ""
            continue
          }
          try {
            const m = await aggregateWithModel(agg, questions[i]!.question, sets[i]!, { deadlineMs: DEADLINE })
            model[i] = m.answer
            lat.push(m.latencyMs)
          } catch {
            failed++
            model[i] = weightedVote(sets[i]!).answer
          }
        }
      }),
    )
    log(`aggregator model on ${kind} sets: ${((Date.now() - s0) / 1000).toFixed(0)} s${failed ? `, ${failed} failed (vote used)` : ""}`)
    out.push(["aggregator model (LoRA on the base)", accOf(model, { latency: lat, dropped: failed })])
  }
  out.push(["any candidate right (ceiling for picking one)", accOf(anyRight)])
  return out
}
const aggMoa = await aggregators("moa", moa)
const aggSelf: Array<[number, Array<[string, Acc]>]> = []
for (const [T, r] of selfRuns) aggSelf.push([T, await aggregators(`self-moa T=${T}`, r)])
await monitor.stop()
await nc.drain()
gate.dispose()
await stopCluster()
const totalSec = (Date.now() - t0) / 1000

// ---------------------------------------------------------------- report
const lines: string[] = []
const say = (s = "") => lines.push(s)
const report = JSON.parse(fs.readFileSync(path.join(ARTIFACTS, "report.json"), "utf8")) as { date?: string; command?: string }
const aggReport = useAggregator ? (JSON.parse(fs.readFileSync(path.join(AGGREGATOR_DIR, "report.json"), "utf8")) as { date?: string; minutes?: number; rows?: number; steps?: number }) : undefined
const cmd = `npm run bench:router:skills -- ${process.argv.slice(2).join(" ")}`.trim()
say(`Measured by \`${cmd}\` (${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC, ${questions.length} held-out questions: ${SKILLS.map((s) => `${s} ${questions.filter((q) => q.skill === s).length}`).join(", ")}; cluster start ${startSec.toFixed(0)} s, whole run ${totalSec.toFixed(0)} s; load average at the end ${os.loadavg()[0]!.toFixed(1)}).`)
say(`Artifacts: experts and base from \`${report.command ?? "?"}\` (${report.date?.slice(0, 16) ?? "?"})${aggReport ? `; aggregator from \`npm run train:aggregator\` (${aggReport.date?.slice(0, 16)}, ${aggReport.minutes} min, ${aggReport.rows} rows, ${aggReport.steps} steps)` : "; no aggregator model trained"}.`)
say(`Experts are \`moa up examples/skills/cluster.ts\` processes on a real nats-server; the router runs in the benchmark process with the committed gate (it routed ${pct(routedRight)} of these questions to their skill's expert).`)
say()
say(`| mode | mixed | ${SKILLS.join(" | ")} | p50 latency |`)
say(`|---|---|${SKILLS.map(() => "---").join("|")}|---|`)
for (const [name, a] of rows) say(`| ${name} | ${pct(a.mixed)} | ${SKILLS.map((s) => pct(a.per[s]!)).join(" | ")} | ${a.p50 !== undefined ? `${a.p50.toFixed(0)} ms` : "–"} |`)
say()
const bestSingle = EXPERTS.map((e) => [e, accOf(singles[e]!.answers).mixed] as const).sort((a, b) => b[1] - a[1])[0]!
const gaps = SKILLS.map((s) => [s, moeAcc.per[s]! - oracleAcc.per[s]!] as const)
const within = gaps.every(([, g]) => g >= -0.02)
say(`- **moe vs the right expert** (target: within 2 points on each skill): ${gaps.map(([s, g]) => `${s} ${g >= 0 ? "+" : ""}${(100 * g).toFixed(1)}`).join(", ")} points → ${within ? "**met**" : "**not met**"}.`)
const moaMixed = accOf(moa.answers).mixed
const selfMixed = Math.max(...selfRuns.map(([, r]) => accOf(r.answers).mixed))
say(`- **moa / self-moa vs the best single expert on the mix** (best single: \`${bestSingle[0]}\` ${pct(bestSingle[1])}): moa ${pct(moaMixed)}, self-moa ${pct(selfMixed)} (best temperature) → ${Math.max(moaMixed, selfMixed) > bestSingle[1] ? "**met**" : "**not met**"}; against the right expert per question (${pct(oracleAcc.mixed)}): moa ${moaMixed >= oracleAcc.mixed ? "≥" : "<"}, self-moa ${selfMixed >= oracleAcc.mixed ? "≥" : "<"}.`)
say()
for (const [kind, table] of [[`moa candidate sets (gate top-${K}, greedy)`, aggMoa] as const, ...aggSelf.map(([T, t]) => [`self-moa candidate sets (gate top-1, ${SAMPLES} samples at T=${T})`, t] as const)]) {
  say(`Aggregators on the same ${kind}:`)
  say()
  say(`| aggregator | mixed | ${SKILLS.join(" | ")} |`)
  say(`|---|---|${SKILLS.map(() => "---").join("|")}|`)
  for (const [name, a] of table) say(`| ${name} | ${pct(a.mixed)} | ${SKILLS.map((s) => pct(a.per[s]!)).join(" | ")} |`)
  const contenders = table.filter(([n]) => !n.startsWith("any candidate"))
  const winner = (get: (a: Acc) => number) => {
    const top = Math.max(...contenders.map(([, a]) => get(a)))
    const w = contenders.filter(([, a]) => get(a) === top).map(([n]) => n.split(" (")[0]!)
    return w.length === contenders.length ? "tie" : w.join(" = ")
  }
  say(`| **wins** | ${winner((a) => a.mixed)} | ${SKILLS.map((s) => winner((a) => a.per[s]!)).join(" | ")} |`)
  say()
}
// per skill: the best single expert against the cluster's modes
const best = (s: string) => EXPERTS.map((e) => [e, accOf(singles[e]!.answers).per[s]!] as const).sort((a, b) => b[1] - a[1])[0]!
const bestAgg = (table: Array<[string, Acc]>, s: string) =>
  table.filter(([n]) => !n.startsWith("any candidate")).map(([n, a]) => [n.split(" (")[0]!, a.per[s]!] as const).sort((a, b) => b[1] - a[1])[0]!
say("Per skill, the best single expert against the modes:")
say()
say(`| skill | best single expert | moe | moa (vote) | ${TS.map((T) => `self-moa T=${T}: vote / best aggregator`).join(" | ")} |`)
say(`|---|---|---|---|${TS.map(() => "---").join("|")}|`)
for (const s of SKILLS) {
  const [e, a] = best(s)
  const selfCells = aggSelf.map(([T, t]) => {
    const [an, av] = bestAgg(t, s)
    return `${pct(accOf(selfRuns.find(([x]) => x === T)![1].answers).per[s]!)} / ${an} ${pct(av)}`
  })
  say(`| ${s} | ${a > 0 ? `\`${e}\` ${pct(a)}` : "none (all 0%)"} | ${pct(moeAcc.per[s]!)} | ${pct(accOf(moa.answers).per[s]!)} | ${selfCells.join(" | ")} |`)
}
say()
say(`Gate input (the issue's question: n-grams or the base's hidden states), both gates fitted on the same ${SKILLS.length} × ~300 labelled training questions, 100 epochs, measured on the held-out questions above:`)
say()
say(`| features | top-1 | top-2 | ${SKILLS.join(" | ")} | features per prompt |`)
say(`|---|---|---|${SKILLS.map(() => "---").join("|")}|---|`)
for (const f of featureRows) say(`| ${f.name} | ${pct(f.top1)} | ${pct(f.top2)} | ${SKILLS.map((s) => pct(f.per[s]!)).join(" | ")} | ${f.msPerPrompt.toFixed(3)} ms |`)
say()
const md = lines.join("\n")
process.stdout.write(`${md}\n`)

fs.mkdirSync(path.join(root, "packages/router/bench/results"), { recursive: true })
fs.writeFileSync(
  path.join(root, "packages/router/bench/results/skills-cluster.json"),
  JSON.stringify({ date: new Date().toISOString(), command: cmd, n: N, k: K, samples: SAMPLES, temperatures: TS, routedRight, rows, gateFeatures: featureRows, aggregators: { moa: aggMoa, "self-moa": Object.fromEntries(aggSelf.map(([T, t]) => [String(T), t])) }, artifacts: report, aggregator: aggReport, seconds: totalSec }, null, 2) + "\n",
)
if (!values["no-doc"]) {
  const doc = path.join(root, "docs/router.md")
  const BEGIN = "<!-- skills-cluster:begin (written by npm run bench:router:skills) -->"
  const END = "<!-- skills-cluster:end -->"
  const text = fs.readFileSync(doc, "utf8")
  const a = text.indexOf(BEGIN)
  const b = text.indexOf(END)
  if (a < 0 || b < a) fail(`docs/router.md has no ${BEGIN} … ${END} section to write into`)
  fs.writeFileSync(doc, `${text.slice(0, a + BEGIN.length)}\n${md}\n${text.slice(b)}`)
  log(`wrote the tables into docs/router.md`)
}
process.exit(0)
