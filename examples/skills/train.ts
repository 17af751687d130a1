/**
 * Train the whole skills cluster from scratch: base (generalist on the mixture) → one LoRA
 * adapter per skill on that base → the gate. Writes examples/skills/artifacts/ and reports
 * per-skill held-out accuracy (greedy, exact match) and the total time.
 *
 *   npm run train:skills                          # default budget: 14 minutes of training
 *   npm run train:skills -- --minutes 55          # a longer budget (closer to SKILLS.md)
 *   npm run train:skills -- --only gate           # just the gate (seconds)
 *
 * Options: --minutes N (total training budget, split 30% base / 70% adapters), --eval N
 * (held-out questions per skill, default 40; capital = recall over a spread sample of the 247 facts, all of them when --eval ≥ 124),
 * --out DIR (default examples/skills/artifacts), --only base|adapters|gate|eval, --seed N.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import { initBackend, CharTokenizer, GPT, makeConfig, train as trainModel, encodeExample, saveCheckpoint, loadCheckpoint, type Progress } from "@moa/model"
import { Adapter, baseFingerprint, evaluateSkills, type EvalResult } from "@moa/tune"
import { SKILLS, generate, allCapitals, format, type SkillName } from "@moa/skills"
import { Gate, defaultGateConfig, ngramFeatures, trainGate } from "@moa/router"

const here = path.dirname(fileURLToPath(import.meta.url))
const { values } = parseArgs({
  options: {
    minutes: { type: "string", default: "14" },
    eval: { type: "string", default: "40" },
    out: { type: "string", default: path.join(here, "artifacts") },
    only: { type: "string" },
    seed: { type: "string", default: "1" },
  },
})
const fail = (m: string): never => {
  process.stderr.write(`train:skills: ${m}\n`)
  process.exit(2)
}
const minutes = Number(values.minutes)
if (!(minutes > 0)) fail(`--minutes must be a positive number, got "${values.minutes}"`)
const nEval = Number(values.eval)
if (!(Number.isInteger(nEval) && nEval > 0)) fail(`--eval must be a positive integer, got "${values.eval}"`)
const only = values.only
if (only !== undefined && !["base", "adapters", "gate", "eval"].includes(only)) fail(`--only must be base, adapters, gate or eval, got "${only}"`)
const seed = Number(values.seed)
const out = path.resolve(values.out!)
const baseDir = path.join(out, "base")
const adapterDir = (s: SkillName) => path.join(out, "adapters", s)
const t0 = Date.now()

/** The experts of the cluster, in the gate's order (the base answers what no expert knows). */
export const EXPERTS = [...SKILLS, "base"] as const

// ---------------------------------------------------------------- progress bar
const tty = process.stdout.isTTY === true
let lastLine = 0
const bar = (label: string, budgetSec: number, p: Progress) => {
  const frac = Math.min(1, p.elapsedSec / budgetSec)
  const w = 24
  const fill = Math.round(frac * w)
  const line = `${label.padEnd(9)} [${"#".repeat(fill)}${"-".repeat(w - fill)}] step ${p.step} loss ${p.loss.toFixed(4)} | ${Math.round(p.tokensPerSec)} tok/s | ${Math.round(p.elapsedSec)}/${Math.round(budgetSec)} s`
  if (tty) process.stdout.write(`\r${line}\x1b[K`)
  else if (Date.now() - lastLine > 30_000 || frac >= 1) {
    lastLine = Date.now()
    process.stdout.write(line + "\n")
  }
}
const done = () => tty && process.stdout.write("\n")

// ---------------------------------------------------------------- data
const trainSet = (s: SkillName, n: number) => (s === "capital" ? allCapitals() : generate(s, { n, seed, split: "train" }))
// capital: the facts are the task (recall); with a small --eval a spread sample of them
const testSet = (s: SkillName) => {
  if (s !== "capital") return generate(s, { n: nEval, seed: seed + 1000, split: "test", unique: true })
  const all = allCapitals()
  return nEval * 2 >= all.length ? all : all.filter((_, i) => i % Math.ceil(all.length / nEval) === 0)
}
/** Completion tokens an answer can need (+ the end marker). */
const MAX_NEW: Record<SkillName, number> = { add: 6, count: 4, reverse: 12, sort: 12, capital: 24 }

const backend = await initBackend(undefined)
console.log(`backend: ${backend.name} (${backend.reason})`)

// ---------------------------------------------------------------- 1. base
const budgetBase = minutes * 60 * 0.3
const budgetAdapter = (minutes * 60 * 0.7) / SKILLS.length
const STEPS = 100_000 // the budget in seconds stops training first

if (only === undefined || only === "base") {
  // every character the cluster can meet (both forms, all capitals) + byte fallback for the rest
  const corpus = SKILLS.flatMap((s) => trainSet(s, 2000).map((e) => { const f = format(e); return f.prompt + f.completion }))
  const tok = CharTokenizer.train(corpus, { byteFallback: true })
  const model = new GPT(makeConfig({ vocabSize: tok.vocabSize, contextLength: 96, dModel: 64, nLayers: 2, nHeads: 4 }))
  // the mixture: equal shares, one example per row, answer-only loss (SKILLS.md recipes)
  const mix = SKILLS.flatMap((s) => trainSet(s, 20_000).map((e) => encodeExample(tok, format(e))))
  console.log(`base: ${model.numParams().toLocaleString()} parameters, vocab ${tok.vocabSize}, ${mix.length} examples, budget ${Math.round(budgetBase)} s`)
  const r = await trainModel({
    model,
    train: mix,
    config: { steps: STEPS, batchSize: 64, lr: 1e-3, warmupSteps: 100, schedule: "constant", maxSeconds: budgetBase, seed },
    onProgress: (p) => bar("base", budgetBase, p),
  })
  done()
  saveCheckpoint(baseDir, model, tok, { metadata: { name: "skills-base", steps: String(r.steps) } })
  console.log(`base: ${r.steps} steps, final loss ${r.finalLoss.toFixed(4)} → ${baseDir}`)
  model.dispose()
}

// ---------------------------------------------------------------- 2. adapters
if (only === undefined || only === "adapters") {
  const { model, tokenizer: tok } = loadCheckpoint(baseDir)
  const fingerprint = baseFingerprint(model)
  for (const s of SKILLS) {
    const adapter = Adapter.create(model, { r: 16, alpha: 32, targetModules: ["all"], seed }, { name: "skills-base", fingerprint })
    adapter.attach(model)
    adapter.training = true
    const rows = trainSet(s, 40_000).map((e) => encodeExample(tok, format(e)))
    const r = await trainModel({
      model,
      train: rows,
      trainable: adapter.variables(),
      config: { steps: STEPS, batchSize: 64, lr: 3e-3, warmupSteps: 50, schedule: "constant", weightDecay: 0, maxSeconds: budgetAdapter, seed },
      onProgress: (p) => bar(s, budgetAdapter, p),
    })
    done()
    adapter.training = false
    fs.rmSync(adapterDir(s), { recursive: true, force: true })
    adapter.save(adapterDir(s))
    console.log(`adapter ${s}: ${adapter.numParams().toLocaleString()} trainable parameters, ${r.steps} steps, final loss ${r.finalLoss.toFixed(4)}`)
    adapter.detach()
    adapter.dispose()
  }
  model.dispose()
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

// ---------------------------------------------------------------- 4. evaluation
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
    console.log(`eval ${s.padEnd(8)} expert ${(100 * exp.accuracy).toFixed(1)}%  base ${(100 * base.accuracy).toFixed(1)}%  (n=${test.length})`)
  }
  const seconds = (Date.now() - t0) / 1000
  const report = { date: new Date().toISOString(), command: `npm run train:skills -- ${process.argv.slice(2).join(" ")}`.trim(), backend: backend.name, minutes, seconds, results }
  fs.writeFileSync(path.join(out, "report.json"), JSON.stringify(report, null, 2) + "\n")
  console.log("\n| skill | expert (LoRA) | base | n |\n|---|---|---|---|")
  for (const s of SKILLS) console.log(`| ${s} | ${(100 * results[s]!.expert).toFixed(1)}% | ${(100 * results[s]!.base).toFixed(1)}% | ${results[s]!.n} |`)
}
console.log(`total time ${((Date.now() - t0) / 1000).toFixed(0)} s`)
