/**
 * Train the whole skills cluster from scratch: base (generalist on the mixture) → one LoRA
 * adapter per skill on that base → the gate → the aggregator model. Writes examples/skills/artifacts/ and reports
 * per-skill held-out accuracy (greedy, exact match) and the total time.
 *
 *   npm run train:skills -- --eval 200            # the committed artifacts (budgets in steps below)
 *   npm run train:skills -- --minutes 40          # the same, with a wall-clock cap on training
 *   npm run train:skills -- --scale 0.1           # a quick smoke run (a tenth of every step budget)
 *   npm run train:skills -- --only gate           # just the gate (seconds)
 *
 * Budgets are in optimizer steps (batch 64), so a loaded machine makes the same model, only
 * slower. Each adapter also stops early once it answers a validation set (drawn from the
 * *training* split, never the held-out test questions) at least `stopAt` right; capital's
 * validation set is all 247 facts in both forms, since recall over them is the task.
 *
 * Options: --eval N (held-out questions per skill, default 200; capital is always all 494
 * questions), --minutes N (optional cap on the training time, shared out in proportion to the
 * step budgets), --scale F (multiply every step budget), --out DIR (default
 * examples/skills/artifacts), --only base|adapters|gate|aggregator|eval, --skills a,b (with
 * --only adapters), --seed N, --aggregator-minutes N (the aggregator model's training, default 4;
 * 0 skips it), --jobs N (adapters trained side by side, each in a process of one native thread;
 * default 2), --group N (batches of like-length rows, N batches at a time; default 16, 0 = off).
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import { initBackend, CharTokenizer, GPT, makeConfig, train as trainModel, encodeExample, saveCheckpoint, loadCheckpoint, type Progress } from "@moa/model"
import { Adapter, baseFingerprint, evaluateSkills, type EvalResult } from "@moa/tune"
import { SKILLS, generate, allCapitals, format, maxCompletionLength, type Example, type SkillName } from "@moa/skills"
import { Gate, defaultGateConfig, ngramFeatures, trainGate } from "@moa/router"

const here = path.dirname(fileURLToPath(import.meta.url))
const parsed = (() => {
  try {
    return parseArgs({
      options: {
        minutes: { type: "string" },
        scale: { type: "string", default: "1" },
        eval: { type: "string", default: "200" },
        out: { type: "string", default: path.join(here, "artifacts") },
        only: { type: "string" },
        "aggregator-minutes": { type: "string", default: "4" },
        seed: { type: "string", default: "1" },
        skills: { type: "string" },
        jobs: { type: "string", default: "2" },
        group: { type: "string", default: "16" },
        "stages-file": { type: "string" },
      },
    })
  } catch (e) {
    process.stderr.write(`train:skills: ${(e as Error).message}\n`)
    process.exit(2)
  }
})()
const { values } = parsed
const fail = (m: string): never => {
  process.stderr.write(`train:skills: ${m}\n`)
  process.exit(2)
}
const minutes = values.minutes === undefined ? undefined : Number(values.minutes)
if (minutes !== undefined && !(minutes > 0)) fail(`--minutes must be a positive number, got "${values.minutes}"`)
const scale = Number(values.scale)
if (!(scale > 0)) fail(`--scale must be a positive number, got "${values.scale}"`)
const nEval = Number(values.eval)
if (!(Number.isInteger(nEval) && nEval > 0)) fail(`--eval must be a positive integer, got "${values.eval}"`)
const only = values.only
if (only !== undefined && !["base", "adapters", "gate", "aggregator", "eval"].includes(only)) fail(`--only must be base, adapters, gate, aggregator or eval, got "${only}"`)
const aggregatorMinutes = Number(values["aggregator-minutes"])
if (!(aggregatorMinutes >= 0)) fail(`--aggregator-minutes must be a number ≥ 0, got "${values["aggregator-minutes"]}"`)
const seed = Number(values.seed)
const jobs = Number(values.jobs)
if (!(Number.isInteger(jobs) && jobs >= 1)) fail(`--jobs must be a whole number ≥ 1, got "${values.jobs}"`)
/** --skills add,sort: (re)train only these adapters (with --only adapters). */
const onlySkills = values.skills === undefined ? undefined : values.skills.split(",").map((x) => x.trim())
for (const x of onlySkills ?? []) if (!(SKILLS as ReadonlyArray<string>).includes(x)) fail(`--skills: unknown skill "${x}" (expected ${SKILLS.join(", ")})`)
const out = path.resolve(values.out!)
const baseDir = path.join(out, "base")
const adapterDir = (s: SkillName) => path.join(out, "adapters", s)
const t0 = Date.now()

/** The experts of the cluster, in the gate's order (the base answers what no expert knows). */
export const EXPERTS = [...SKILLS, "base"] as const

// ---------------------------------------------------------------- the recipe
/** The shared base: d128, 4 layers, 4 heads (≈0.85M parameters), context 96 (the longest capital row is 76 tokens). */
const BASE_SHAPE = { contextLength: 96, dModel: 128, nLayers: 4, nHeads: 4 }
/** SKILLS.md's recipe (AdamW lr 1e-3, betas .9/.99, wd 0.1, clip 1, batch 64, warm-up 100, answer-only loss), decaying to lr/10 by a cosine. */
const BASE_STEPS = 2000
/** Batches of like-length rows, drawn --group batches at a time (random batches of the mixture were 48 tokens wide for rows of 25 on average); 0 = random batches. */
const GROUP = Number(values.group)
if (!(Number.isInteger(GROUP) && GROUP >= 0)) fail(`--group must be a whole number ≥ 0, got "${values.group}"`)
interface AdapterRecipe {
  /** most optimizer steps (batch 64) */
  readonly steps: number
  /** peak learning rate (default LORA.lr) */
  readonly lr?: number
  /** "cosine" decays to lr/10 over `steps` (default "constant" after the 50 warm-up steps) */
  readonly schedule?: "cosine" | "constant"
  /** stop when the validation exact match reaches this */
  readonly stopAt: number
  /** validate every this many steps */
  readonly every: number
}
/**
 * LoRA on every linear layer (q, k, v, o, mlp in/out of all 4 blocks): r 16, alpha 32, lr 2e-3, no
 * weight decay. (On d128, r 64 adds about 75% to the matmul work of a step, r 16 about 19%; the
 * earlier r 64 adapters were no better for their rank.)
 */
const LORA = { r: 16, alpha: 32, lr: 2e-3 }
/** Cosine decay to lr/10 where a constant rate stalled or blew up late (add, at 2e-3, from 69% to 0% in 235 steps). */
const ADAPTERS: Record<SkillName, AdapterRecipe> = {
  add: { steps: 2400, stopAt: 0.99, every: 300, schedule: "cosine" },
  reverse: { steps: 800, stopAt: 0.99, every: 200 },
  sort: { steps: 1500, stopAt: 0.99, every: 250, schedule: "cosine" },
  capital: { steps: 1000, stopAt: 1, every: 200, lr: 3e-3, schedule: "cosine" },
  count: { steps: 1200, stopAt: 0.99, every: 200, schedule: "cosine" },
}
/** Adapters in this order: the quick ones first, so the time they save under --minutes goes to add. */
const ADAPTER_ORDER: ReadonlyArray<SkillName> = ["reverse", "count", "sort", "capital", "add"]
const steps = (n: number) => Math.max(1, Math.round(n * scale))
const totalSteps = steps(BASE_STEPS) + SKILLS.reduce((a, s) => a + steps(ADAPTERS[s].steps), 0)

// ---------------------------------------------------------------- the --minutes cap
// A step costs about (batch × the longest row in it) token positions, so each stage's expected
// cost is steps × its typical padded row length (characters + bos/sep/eos, from a sample of the
// data, in batches of like length as GROUP makes them). Before a stage starts it gets the time
// left times its share of the remaining cost, so time an adapter saves by stopping early goes to
// the stages after it; the adapter workers (--jobs) take the costliest first.
const paddedLength = (rows: ReadonlyArray<{ prompt: string; completion: string }>): number => {
  // 16 batches of 64 sampled rows: sorted first when batches are grouped by length (--group > 1)
  const lengths = Array.from({ length: 16 * 64 }, (_, k) => {
    const f = rows[(k * 104729) % rows.length]!
    return [...f.prompt].length + [...f.completion].length + 3
  })
  if (GROUP > 1) lengths.sort((x, y) => x - y)
  let sum = 0
  for (let b = 0; b < 16; b++) sum += Math.max(...lengths.slice(b * 64, b * 64 + 64))
  return sum / 16
}
const stageCost: Record<string, number> = {}
const capDeadline = minutes === undefined ? undefined : t0 + minutes * 60_000
/** Seconds of training for `stage` under --minutes (0 = no cap), given the stages still to run. */
const capFor = (stage: string, remaining: ReadonlyArray<string>): number => {
  if (capDeadline === undefined) return 0
  const left = Math.max(1, (capDeadline - Date.now()) / 1000)
  const total = remaining.reduce((a, s) => a + stageCost[s]!, 0)
  return (left * stageCost[stage]!) / total
}

// ---------------------------------------------------------------- progress bar
const tty = process.stdout.isTTY === true
let lastLine = 0
const fmtTime = (s: number) => (s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m` : `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, "0")}s`)
const bar = (label: string, p: Progress, extra = "") => {
  const frac = Math.min(1, p.step / p.steps)
  const w = 24
  const fill = Math.round(frac * w)
  const line = `${label.padEnd(8)} [${"#".repeat(fill)}${"-".repeat(w - fill)}] step ${p.step}/${p.steps} loss ${p.loss.toFixed(4)} | ${Math.round(p.tokensPerSec)} tok/s | ${fmtTime(p.elapsedSec)} ETA ${fmtTime(p.etaSec)}${extra}`
  if (tty) process.stdout.write(`\r${line}\x1b[K`)
  else if (Date.now() - lastLine > 30_000 || frac >= 1 || extra) {
    lastLine = Date.now()
    process.stdout.write(line + "\n")
  }
}
const done = () => tty && process.stdout.write("\n")

// ---------------------------------------------------------------- data
const trainSet = (s: SkillName, n: number) => (s === "capital" ? allCapitals() : generate(s, { n, seed, split: "train" }))
/** Held-out questions (never in training); capital: every fact in both forms (recall). */
const testSet = (s: SkillName): Example[] => (s === "capital" ? allCapitals() : generate(s, { n: nEval, seed: seed + 1000, split: "test", unique: true }))
/** Early-stopping questions: from the training split (a different seed), never the test split. */
const valSet = (s: SkillName): Example[] => (s === "capital" ? allCapitals() : generate(s, { n: 200, seed: seed + 500, split: "train", unique: true }))
/** Completion tokens an answer can need: the longest completion + the end marker + 1. */
const MAX_NEW = Object.fromEntries(SKILLS.map((s) => [s, maxCompletionLength(s) + 2])) as Record<SkillName, number>
/**
 * The base's mixture: one example per row, an equal share per skill: 20,000 drawn questions of
 * each skill, and capital's 494 questions (the facts are the task) repeated to as many rows. (At
 * its natural 0.6% of the rows the base saw each fact about once and recalled none.)
 */
const MIX_PER_SKILL = 20_000
const mixture = SKILLS.flatMap((s) => {
  const rows = trainSet(s, MIX_PER_SKILL).map((e) => format(e))
  return Array.from({ length: MIX_PER_SKILL }, (_, i) => rows[i % rows.length]!)
})
stageCost.base = steps(BASE_STEPS) * paddedLength(mixture)
for (const s of SKILLS) stageCost[s] = steps(ADAPTERS[s].steps) * paddedLength(trainSet(s, 2000).map((e) => format(e)))

// Under load (other processes on the 2 cores), one native thread beats two: each OpenMP region
// waits for its second thread to be scheduled. MOA_NATIVE_THREADS, when set, wins.
if (process.env.MOA_NATIVE_THREADS === undefined && os.loadavg()[0] > 1.5 * os.cpus().length) process.env.MOA_NATIVE_THREADS = "1"
const backend = await initBackend(undefined)
console.log(`backend: ${backend.name} (${backend.reason})${process.env.MOA_NATIVE_THREADS ? `, MOA_NATIVE_THREADS=${process.env.MOA_NATIVE_THREADS}` : ""}; load average ${os.loadavg()[0].toFixed(1)}`)
console.log(`budget: ${totalSteps} steps of batch 64 (base ${steps(BASE_STEPS)}, adapters ${SKILLS.map((s) => `${s} ≤${steps(ADAPTERS[s].steps)}`).join(", ")})${minutes ? `, capped at ${minutes} min of training` : ""}`)
const stages: Record<string, { steps: number; tokens: number; seconds: number; finalLoss: number; stoppedAt?: number; valAccuracy?: number; keptStep?: number }> = {}

// ---------------------------------------------------------------- 1. base
if (only === undefined || only === "base") {
  // every character the cluster can meet (both forms, all capitals) + byte fallback for the rest
  const corpus = SKILLS.flatMap((s) => trainSet(s, 2000).map((e) => { const f = format(e); return f.prompt + f.completion }))
  const tok = CharTokenizer.train(corpus, { byteFallback: true })
  const model = new GPT(makeConfig({ vocabSize: tok.vocabSize, ...BASE_SHAPE }))
  // the mixture, answer-only loss (SKILLS.md recipes)
  const mix = mixture.map((f) => encodeExample(tok, f))
  const n = steps(BASE_STEPS)
  const cap = capFor("base", ["base", ...(only === undefined ? ADAPTER_ORDER : [])])
  console.log(`base: ${model.numParams().toLocaleString()} parameters, vocab ${tok.vocabSize}, ${mix.length} examples, ${n} steps${cap ? ` (at most ${fmtTime(cap)})` : ""}`)
  const r = await trainModel({
    model,
    train: mix,
    config: { steps: n, batchSize: 64, lr: 1e-3, warmupSteps: 100, schedule: "cosine", weightDecay: 0.1, beta1: 0.9, beta2: 0.99, gradClip: 1, maxSeconds: cap, seed, groupByLength: GROUP },
    onProgress: (p) => bar("base", p),
  })
  done()
  saveCheckpoint(baseDir, model, tok, { metadata: { name: "skills-base", steps: String(r.steps) } })
  stages.base = { steps: r.steps, tokens: r.tokens, seconds: r.seconds, finalLoss: r.finalLoss }
  console.log(`base: ${r.steps} steps, ${(r.tokens / 1e6).toFixed(2)}M tokens in ${fmtTime(r.seconds)}, final loss ${r.finalLoss.toFixed(4)} → ${baseDir}`)
  model.dispose()
}

// ---------------------------------------------------------------- 2. adapters
class StopEarly extends Error {}
const adapterOrder = ADAPTER_ORDER.filter((s) => onlySkills === undefined || onlySkills.includes(s))
const adaptersHere = only === undefined || only === "adapters"
const workers = adaptersHere && values["stages-file"] === undefined ? Math.min(jobs, adapterOrder.length) : 1
if (adaptersHere && workers > 1) {
  // the adapters are independent: `jobs` workers, each a child process of one native thread (on
  // this 2-core machine two one-thread processes beat one two-thread process), take the next
  // adapter from one queue, the costliest first — so a worker whose adapter stopped early takes
  // the next one, instead of a fixed share of them
  const queue = [...adapterOrder].sort((a, b) => stageCost[b]! - stageCost[a]!)
  await Promise.all(Array.from({ length: workers }, async (_, w) => {
    for (let s = queue.shift(); s !== undefined; s = queue.shift()) Object.assign(stages, await trainAdapterProcess(s, w, queue))
  }))
} else if (adaptersHere && adapterOrder.length > 0) {
  const { model, tokenizer: tok } = loadCheckpoint(baseDir)
  const fingerprint = baseFingerprint(model)
  const order = adapterOrder
  for (const [i, s] of order.entries()) {
    const recipe = ADAPTERS[s]
    const n = steps(recipe.steps)
    const adapter = Adapter.create(model, { r: LORA.r, alpha: LORA.alpha, targetModules: ["all"], seed }, { name: "skills-base", fingerprint })
    adapter.attach(model)
    adapter.training = true
    const rows = trainSet(s, 40_000).map((e) => encodeExample(tok, format(e)))
    const val = valSet(s)
    let valAccuracy: number | undefined
    let stoppedAt: number | undefined
    // a validation pass every `every` steps; reaching stopAt ends the stage (the weights are
    // updated in place, so leaving train() by an exception keeps what was learned)
    let last: Progress | undefined
    let best: { accuracy: number; step: number } | undefined
    fs.rmSync(adapterDir(s), { recursive: true, force: true })
    const t1 = Date.now()
    const cap = capFor(s, order.slice(i))
    try {
      await trainModel({
        model,
        train: rows,
        trainable: adapter.variables(),
        config: { steps: n, batchSize: 64, lr: recipe.lr ?? LORA.lr, warmupSteps: 50, schedule: recipe.schedule ?? "constant", weightDecay: 0, gradClip: 1, maxSeconds: cap, seed, groupByLength: GROUP },
        onProgress: (p) => {
          last = p
          let extra = ""
          if (p.step % steps(recipe.every) === 0 && p.step < n) {
            adapter.training = false
            valAccuracy = evaluateSkills(s, model, tok, val, { withLoss: false, maxNew: MAX_NEW[s] }).accuracy
            adapter.training = true
            extra = ` | validation ${(100 * valAccuracy).toFixed(1)}%`
            if (valAccuracy >= recipe.stopAt) stoppedAt = p.step
            // keep the best adapter so far: a constant-lr LoRA run can blow up late (add went from
            // 69% validation at step 2000 to 0% held-out at 2235 in one run)
            if (best === undefined || valAccuracy > best.accuracy) {
              best = { accuracy: valAccuracy, step: p.step }
              fs.rmSync(adapterDir(s), { recursive: true, force: true })
              adapter.save(adapterDir(s))
            }
          }
          bar(s, p, extra)
          if (stoppedAt) throw new StopEarly()
        },
      })
    } catch (e) {
      if (!(e instanceof StopEarly)) throw e
    }
    done()
    const rowTokens = rows.reduce((a, r) => a + r.ids.length - 1, 0) / rows.length
    const r = { steps: last?.step ?? 0, tokens: Math.round((last?.step ?? 0) * 64 * rowTokens), seconds: (Date.now() - t1) / 1000, finalLoss: last?.loss ?? NaN }
    adapter.training = false
    // the final adapter, unless an earlier one answered the validation set better
    const finalAccuracy = evaluateSkills(s, model, tok, val, { withLoss: false, maxNew: MAX_NEW[s] }).accuracy
    if (best === undefined || finalAccuracy >= best.accuracy) {
      fs.rmSync(adapterDir(s), { recursive: true, force: true })
      adapter.save(adapterDir(s))
      best = { accuracy: finalAccuracy, step: last?.step ?? 0 }
    }
    valAccuracy = best.accuracy
    stages[s] = { steps: r.steps, tokens: r.tokens, seconds: r.seconds, finalLoss: r.finalLoss, keptStep: best.step, valAccuracy: best.accuracy, ...(stoppedAt ? { stoppedAt } : {}) }
    console.log(`adapter ${s}: ${adapter.numParams().toLocaleString()} trainable parameters, ${r.steps} steps${stoppedAt ? ` (validation ${(100 * valAccuracy!).toFixed(1)}% ≥ ${100 * recipe.stopAt}%: stopped early)` : ""}, ≈${(r.tokens / 1e6).toFixed(2)}M tokens in ${fmtTime(r.seconds)}${cap ? ` (at most ${fmtTime(cap)})` : ""}, final loss ${r.finalLoss.toFixed(4)}; kept the adapter of step ${best.step} (validation ${(100 * best.accuracy).toFixed(1)}%)`)
    adapter.detach()
    adapter.dispose()
  }
  model.dispose()
  if (values["stages-file"] !== undefined) fs.writeFileSync(values["stages-file"], JSON.stringify(stages))
}

/**
 * Train one adapter in a child process (this script, `--only adapters --skills s`); its output
 * lines are passed on. Under --minutes it gets its share of the time left: the workers' time
 * times its cost over the cost of it and the adapters still queued.
 */
async function trainAdapterProcess(s: SkillName, w: number, queued: ReadonlyArray<SkillName>): Promise<typeof stages> {
  const { spawn } = await import("node:child_process")
  const file = path.join(os.tmpdir(), `moa-train-skills-${process.pid}-${s}.json`)
  const args = ["--only", "adapters", "--skills", s, "--out", out, "--seed", String(seed), "--scale", String(scale), "--group", String(GROUP), "--stages-file", file]
  if (capDeadline !== undefined) {
    const left = Math.max(0.1, (capDeadline - Date.now()) / 60_000)
    const share = (stageCost[s]! * workers) / [s, ...queued].reduce((a, x) => a + stageCost[x]!, 0)
    args.push("--minutes", String(Math.max(0.1, left * Math.min(1, share))))
  }
  console.log(`adapter ${s}: worker ${w + 1}/${workers} (a process of one native thread)`)
  const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...args], {
    env: { ...process.env, MOA_NATIVE_THREADS: "1" },
    stdio: ["ignore", "pipe", "inherit"],
  })
  // when this process exits (another adapter failed, or it was stopped), the child goes too
  const stop = () => child.kill()
  process.once("exit", stop)
  child.once("exit", () => process.off("exit", stop))
  let buf = ""
  child.stdout.setEncoding("utf8").on("data", (d: string) => {
    buf += d
    for (let k = buf.indexOf("\n"); k >= 0; k = buf.indexOf("\n")) {
      const line = buf.slice(0, k)
      buf = buf.slice(k + 1)
      // the child's own header lines would repeat the parent's
      if (!/^(backend:|budget:|total time )/.test(line) && line.trim() !== "") process.stdout.write(line + "\n")
    }
  })
  const code = await new Promise<number | null>((resolve) => child.on("exit", resolve))
  if (code !== 0) fail(`training the ${s} adapter failed (exit ${code}); its output is above`)
  const r = JSON.parse(fs.readFileSync(file, "utf8")) as typeof stages
  fs.rmSync(file, { force: true })
  return r
}

// ---------------------------------------------------------------- 3. gate
if (only === undefined || only === "gate") {
  const features = ngramFeatures()
  const experts = [...EXPERTS]
  const labelled = SKILLS.flatMap((s) => trainSet(s, 1000).slice(0, 1000).map((e) => ({ prompt: e.question, skill: s })))
  const x = await features.extract(labelled.map((l) => l.prompt))
  const y = labelled.map((l) => experts.map((e) => (e === l.skill ? 1 : 0)))
  const gate = new Gate(defaultGateConfig(experts, features.spec, { k: 1, fallback: "base", threshold: 0.3 }), seed)
  trainGate(gate, x, y, { epochs: 100 })
  const test = SKILLS.flatMap((s) => (s === "capital" ? allCapitals() : generate(s, { n: 400, seed: seed + 2000, split: "test", unique: true })).map((e) => ({ prompt: e.question, skill: s })))
  const probs = gate.probs(await features.extract(test.map((t) => t.prompt)))
  const right = test.filter((t, i) => experts[probs[i]!.indexOf(Math.max(...probs[i]!))] === t.skill).length
  fs.mkdirSync(path.join(out, "gate"), { recursive: true })
  fs.writeFileSync(path.join(out, "gate", "gate.safetensors"), gate.toSafetensors())
  fs.writeFileSync(path.join(out, "gate", "gate.json"), JSON.stringify({ config: gate.config, metrics: { heldOutTop1: right / test.length, n: test.length } }, null, 2) + "\n")
  console.log(`gate: held-out top-1 ${(100 * right / test.length).toFixed(1)}% of ${test.length}`)
}

// ---------------------------------------------------------------- 4. aggregator
// the aggregator model (train-aggregator.ts): a LoRA on this base trained on candidate sets the
// new experts produce; `--aggregator-minutes 0` skips it (the cluster then runs without it)
if ((only === undefined && aggregatorMinutes > 0) || only === "aggregator") {
  const { trainAggregator } = await import("./train-aggregator.ts")
  const r = await trainAggregator({ artifacts: out, minutes: aggregatorMinutes || 4, evalPerSkill: 0, seed })
  console.log(`aggregator: ${r.rows} rows, ${r.steps} steps in ${r.seconds.toFixed(0)} s, final loss ${r.finalLoss.toFixed(4)} → ${r.out}`)
}

// ---------------------------------------------------------------- 5. evaluation
if (only === undefined || only === "eval") {
  const { model, tokenizer: tok } = loadCheckpoint(baseDir)
  const results: Record<string, { base: number; expert: number; n: number }> = {}
  for (const s of SKILLS) {
    const test = testSet(s)
    const base: EvalResult = evaluateSkills("base", model, tok, test, { withLoss: false, maxNew: MAX_NEW[s] })
    const adapter = Adapter.load(adapterDir(s), model)
    adapter.attach(model)
    const exp: EvalResult = evaluateSkills(s, model, tok, test, { withLoss: false, maxNew: MAX_NEW[s] })
    adapter.detach()
    adapter.dispose()
    results[s] = { base: base.accuracy, expert: exp.accuracy, n: test.length }
    const wrong = (exp.samples ?? []).filter((x) => !x.correct).slice(0, 3).map((x) => `${x.question} → ${JSON.stringify(x.got)} (${x.expected})`)
    console.log(`eval ${s.padEnd(8)} expert ${(100 * exp.accuracy).toFixed(1)}%  base ${(100 * base.accuracy).toFixed(1)}%  (n=${test.length})${wrong.length ? `  e.g. ${wrong.join("; ")}` : ""}`)
  }
  const seconds = (Date.now() - t0) / 1000
  // an evaluation alone (--only eval) keeps the training record of the run that made the artifacts
  const reportFile = path.join(out, "report.json")
  const previous = only === "eval" && fs.existsSync(reportFile) ? (JSON.parse(fs.readFileSync(reportFile, "utf8")) as { command?: string; seconds?: number; stages?: unknown; recipe?: unknown }) : undefined
  const report = {
    date: new Date().toISOString(),
    command: `npm run train:skills -- ${process.argv.slice(2).join(" ")}`.trim(),
    backend: backend.name,
    threads: process.env.MOA_NATIVE_THREADS ?? "default",
    jobs,
    recipe: { base: { ...BASE_SHAPE, steps: steps(BASE_STEPS), batch: 64, lr: 1e-3, schedule: "cosine", mixture: `${MIX_PER_SKILL} rows a skill`, groupByLength: GROUP }, lora: { ...LORA, targetModules: ["all"], batch: 64 }, adapters: ADAPTERS, scale, minutes: minutes ?? null },
    stages,
    seconds,
    results,
    ...(previous ? { training: { command: previous.command, seconds: previous.seconds, stages: previous.stages, recipe: previous.recipe } } : {}),
  }
  fs.writeFileSync(reportFile, JSON.stringify(report, null, 2) + "\n")
  console.log("\n| skill | expert (LoRA) | base | n |\n|---|---|---|---|")
  for (const s of SKILLS) console.log(`| ${s} | ${(100 * results[s]!.expert).toFixed(1)}% | ${(100 * results[s]!.base).toFixed(1)}% | ${results[s]!.n} |`)
}
console.log(`total time ${fmtTime((Date.now() - t0) / 1000)} (${((Date.now() - t0) / 1000).toFixed(0)} s)`)
