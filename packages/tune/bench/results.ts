// The docs run (not in CI): a generalist base on the five CI-size skills, then per skill a LoRA
// expert, full fine-tuning and Half Fine-Tuning from that base, evaluated on every skill
// (own-skill accuracy + forgetting), with trainable parameters, adapter size on disk and the
// QLoRA-style memory. Writes docs/tune-results.json, docs/tune-results.md and SVG loss curves.
//
//   npx tsx packages/tune/bench/results.ts [baseSteps=300] [expertSteps=150] [outDir=docs]
import * as fs from "node:fs"
import * as path from "node:path"
import * as tf from "@tensorflow/tfjs"
import { CharTokenizer, GPT, initBackend, makeConfig, type BackendName } from "@moa/model"
import { SKILLS, type SkillName, allCapitals, format, generate } from "@moa/skills"
import { Adapter } from "../src/peft/adapter.ts"
import { hftTrainable } from "../src/peft/hft.ts"
import { train, type TrainLogEntry } from "../src/sft.ts"
import { evaluateSkills } from "../src/eval/skills.ts"
import { compareMarkdown, type EvalResult } from "../src/eval/report.ts"
import { lossCurveSvg, seriesFromLog } from "../src/eval/plot.ts"

const baseSteps = Number(process.argv[2] ?? 300)
const expertSteps = Number(process.argv[3] ?? 150)
const outDir = process.argv[4] ?? "docs"
const backend = await initBackend(process.env.MOA_BACKEND as BackendName | undefined)
const size = "ci" as const
const t00 = Date.now()
const say = (s: string) => console.log(`[${((Date.now() - t00) / 1000).toFixed(0)}s] ${s}`)
say(`backend ${backend.name} (kernel fixes ${backend.kernelFixes}); base ${baseSteps} steps, experts ${expertSteps} steps`)

const trainOf = (s: SkillName) => (s === "capital" ? allCapitals(size) : generate(s, { n: 2000, seed: 1, size, split: "train" }))
const testOf = (s: SkillName) => (s === "capital" ? allCapitals(size) : generate(s, { n: 100, seed: 2, size, split: "test" }))
const tests = new Map(SKILLS.map((s) => [s, testOf(s)]))
const allTest = SKILLS.flatMap((s) => tests.get(s)!)
const rows = (s: SkillName) => trainOf(s).map((e) => ({ ...format(e, { size }), task: s }))
const corpus = SKILLS.flatMap((s) => [...trainOf(s), ...testOf(s)].flatMap((e) => Object.values(format(e, { size }))))
const tok = CharTokenizer.train(corpus, { byteFallback: false })
const model = new GPT(makeConfig({ vocabSize: tok.vocabSize, contextLength: 32, dModel: 64, nLayers: 2, nHeads: 4, dropout: 0 }), { seed: 1 })
say(`model ${model.numParams()} params, vocab ${tok.vocabSize}`)
const opts = { batchSize: 32, lr: 5e-3, warmup: 20, logEvery: 10 }
const loraLr = 1e-2 // adapters usually want a higher learning rate than full fine-tuning
const evalAll = (name: string): EvalResult => evaluateSkills(name, model, tok, allTest, { size })

const logs: Record<string, TrainLogEntry[]> = {}
// 1. the generalist base on the mixture
const mix = SKILLS.flatMap(rows)
let r = train(model, tok, mix, { ...opts, variables: [...model.params.values()], steps: baseSteps, seed: 1 })
logs.base = r.log
const base = evalAll("base (generalist)")
say(`base: ${JSON.stringify(Object.fromEntries(Object.entries(base.perTask).map(([k, v]) => [k, v.accuracy])))} in ${(r.elapsedMs / 1000).toFixed(0)}s`)
const snapshot = new Map([...model.params].map(([k, v]) => [k, tf.keep(v.clone())]))
const restore = () => {
  for (const [k, v] of model.params) v.assign(snapshot.get(k)!)
}

const results: Record<string, unknown>[] = []
const table: EvalResult[] = [base]
const extra: Record<string, Record<string, string>> = {}
for (const skill of SKILLS) {
  const data = rows(skill)
  // LoRA expert
  const ad = Adapter.create(model, { r: 8, alpha: 16, targetModules: ["all"], seed: 3 }, { name: "tune-results-base" })
  ad.attach(model)
  r = train(model, tok, data, { ...opts, lr: loraLr, variables: ad.variables(), steps: expertSteps, seed: 2, setTraining: (on) => (ad.training = on) })
  logs[`lora-${skill}`] = r.log
  const lora = evalAll(`lora:${skill}`)
  const dir = path.join("/tmp", `moa-tune-results-${process.pid}`, skill)
  const bytes = ad.save(dir)
  ad.dispose()
  extra[lora.name] = { "trainable params": ad.numParams().toLocaleString("en"), "adapter on disk": `${(bytes / 1024).toFixed(1)} KiB`, seconds: (r.elapsedMs / 1000).toFixed(0) }
  say(`lora ${skill}: own ${lora.perTask[skill]!.accuracy} (${(r.elapsedMs / 1000).toFixed(0)}s)`)
  // full fine-tuning
  restore()
  r = train(model, tok, data, { ...opts, variables: [...model.params.values()], steps: expertSteps, seed: 2 })
  logs[`full-${skill}`] = r.log
  const full = evalAll(`full:${skill}`)
  extra[full.name] = { "trainable params": model.numParams().toLocaleString("en"), seconds: (r.elapsedMs / 1000).toFixed(0) }
  say(`full ${skill}: own ${full.perTask[skill]!.accuracy}`)
  restore()
  // Half Fine-Tuning: one half of every category for the whole stage (the paper's unit); each
  // skill is its own stage, so each draws its own half
  const names = [...model.params.keys()]
  const stage = SKILLS.indexOf(skill)
  const hftVars = hftTrainable(names, stage, 7).map((n) => model.params.get(n)!)
  const trainedHft = hftVars.reduce((n, v) => n + v.size, 0)
  r = train(model, tok, data, { ...opts, steps: expertSteps, seed: 2, variables: hftVars })
  logs[`hft-${skill}`] = r.log
  const hft = evalAll(`hft:${skill}`)
  extra[hft.name] = { "trainable params": trainedHft.toLocaleString("en"), seconds: (r.elapsedMs / 1000).toFixed(0) }
  say(`hft ${skill}: own ${hft.perTask[skill]!.accuracy}`)
  restore()
  table.push(lora, full, hft)
  const others = (e: EvalResult) => SKILLS.filter((s) => s !== skill).map((s) => e.perTask[s]!.accuracy)
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length
  results.push({
    skill,
    base: base.perTask[skill]!.accuracy,
    lora: lora.perTask[skill]!.accuracy,
    full: full.perTask[skill]!.accuracy,
    hft: hft.perTask[skill]!.accuracy,
    othersBase: mean(others(base)),
    othersLora: mean(others(lora)),
    othersFull: mean(others(full)),
    othersHft: mean(others(hft)),
    loraParams: ad.numParams(),
    loraBytes: bytes,
  })
  fs.mkdirSync(outDir, { recursive: true })
  fs.writeFileSync(path.join(outDir, "tune-results.json"), JSON.stringify({ backend, baseSteps, expertSteps, params: model.numParams(), results, logs }, null, 1))
}

// QLoRA-style: LoRA on an int8 and a 4-bit base, on one skill
const qskill: SkillName = "sort"
const qrows: Record<string, unknown>[] = []
for (const bits of [8, 4] as const) {
  restore()
  const ad = Adapter.create(model, { r: 8, alpha: 16, targetModules: ["all"], seed: 3 }, { name: "tune-results-base" })
  const heldBefore = tf.memory().numBytes
  ad.attach(model, { quantize: bits, releaseFloat32: true })
  const heldAfter = tf.memory().numBytes
  r = train(model, tok, rows(qskill), { ...opts, lr: loraLr, variables: ad.variables(), steps: expertSteps, seed: 2 })
  const q = evalAll(`qlora-int${bits}:${qskill}`)
  const mem = { ...ad.quantizedMemory()!, tensorBytesBefore: heldBefore, tensorBytesAfter: heldAfter }
  extra[q.name] = {
    "trainable params": ad.numParams().toLocaleString("en"),
    "base linear weights": `${(mem.quantizedBytes / 1024).toFixed(1)} KiB (fp32 ${(mem.float32Bytes / 1024).toFixed(1)} KiB); all tensors ${(heldBefore / 1024).toFixed(0)} → ${(heldAfter / 1024).toFixed(0)} KiB`,
    seconds: (r.elapsedMs / 1000).toFixed(0),
  }
  table.push(q)
  qrows.push({ bits, own: q.perTask[qskill]!.accuracy, ...mem })
  say(`qlora int${bits}: own ${q.perTask[qskill]!.accuracy}, ${JSON.stringify(mem)}`)
  ad.detach() // puts the (dequantised) float32 weights back; restore() then copies the originals
  ad.dispose()
}

const md = [
  `Backend ${backend.name} (kernel fixes: ${backend.kernelFixes}); model ${model.numParams().toLocaleString("en")} parameters (d64, 2 layers, 4 heads, context 32, char tokenizer).`,
  `Base: ${baseSteps} steps of full training on the mixture of the five CI-size skills; experts: ${expertSteps} steps on one skill, batch 32, lr 5e-3 (LoRA/QLoRA 1e-2, r 8, alpha 16, all linear layers; HFT trains one half of every category for the whole stage, each skill its own stage). Held-out: 100 test questions per skill (capital: all ${allCapitals(size).length} CI questions, recall).`,
  "",
  compareMarkdown(table, extra),
  "",
  "| skill | base | LoRA | full FT | HFT | other skills: base | LoRA (adapter on) | full FT | HFT |",
  "|---|---|---|---|---|---|---|---|---|",
  ...results.map((x: any) => `| ${x.skill} | ${pct(x.base)} | ${pct(x.lora)} | ${pct(x.full)} | ${pct(x.hft)} | ${pct(x.othersBase)} | ${pct(x.othersLora)} | ${pct(x.othersFull)} | ${pct(x.othersHft)} |`),
  "",
  `Total wall time ${((Date.now() - t00) / 1000).toFixed(0)} s.`,
].join("\n")
function pct(x: number) {
  return `${(100 * x).toFixed(1)}%`
}
fs.writeFileSync(path.join(outDir, "tune-results.md"), md + "\n")
fs.writeFileSync(path.join(outDir, "tune-results.json"), JSON.stringify({ backend, baseSteps, expertSteps, params: model.numParams(), results, qlora: qrows, logs }, null, 1))
fs.writeFileSync(
  path.join(outDir, "tune-loss.svg"),
  lossCurveSvg([...seriesFromLog(logs.base!, "base "), ...["lora", "full", "hft"].flatMap((m) => seriesFromLog(logs[`${m}-sort`]!, `${m} sort `))], { title: "training loss: base mixture, then sort experts", logY: true }),
)
say("done")
