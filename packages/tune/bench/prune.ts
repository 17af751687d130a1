// Accuracy vs size under pruning (not in CI): train a small model on the CI-size sort skill, then
// prune copies of it (magnitude 25/50/75/90%, structured heads 25/50%, MLP neurons 25/50/75%)
// and evaluate each on 100 held-out questions.
//   npx tsx packages/tune/bench/prune.ts [steps=200] [out=docs/tune-prune.md]
import * as fs from "node:fs"
import * as tf from "@tensorflow/tfjs"
import { CharTokenizer, GPT, initBackend, makeConfig } from "@moa/model"
import { format, generate } from "@moa/skills"
import { train } from "../src/sft.ts"
import { evaluateSkills } from "../src/eval/skills.ts"
import { magnitudePrune, structuredPrune, type PruneReport } from "../src/prune.ts"

const steps = Number(process.argv[2] ?? 200)
const out = process.argv[3] ?? "docs/tune-prune.md"
const backend = await initBackend("wasm")
const size = "ci" as const
const trainSet = generate("sort", { n: 2000, seed: 1, size }).map((e) => format(e, { size }))
const test = generate("sort", { n: 100, seed: 2, size, split: "test" })
const tok = CharTokenizer.train(trainSet.flatMap((e) => [e.prompt, e.completion]), { byteFallback: false })
const model = new GPT(makeConfig({ vocabSize: tok.vocabSize, contextLength: 24, dModel: 64, nLayers: 2, nHeads: 4 }), { seed: 1 })
const r = train(model, tok, trainSet, { variables: [...model.params.values()], steps, batchSize: 32, lr: 5e-3, warmup: 20, seed: 1 })
const snapshot = new Map([...model.params].map(([k, v]) => [k, tf.keep(v.clone())]))
const restore = () => model.params.forEach((v, k) => v.assign(snapshot.get(k)!))
const acc = () => evaluateSkills("x", model, tok, test, { size }).accuracy
const rows: string[] = [`| pruning | accuracy | zero parameters | parameters after cutting zeroed units |`, `|---|---|---|---|`]
const row = (name: string, rep: PruneReport | undefined) => {
  const a = acc()
  rows.push(`| ${name} | ${(100 * a).toFixed(0)}% | ${rep ? `${rep.zeros.toLocaleString("en")} of ${rep.params.toLocaleString("en")} (${((100 * rep.zeros) / rep.params).toFixed(0)}%)` : "–"} | ${rep?.compactParams?.toLocaleString("en") ?? "–"} |`)
  console.log(rows[rows.length - 1])
  restore()
}
row("none (trained model)", undefined)
for (const s of [0.25, 0.5, 0.75, 0.9]) row(`magnitude ${s * 100}% of each linear weight`, magnitudePrune(model, s))
for (const h of [0.25, 0.5]) row(`${h * 100}% of attention heads per layer`, structuredPrune(model, { headFraction: h }))
for (const n of [0.25, 0.5, 0.75]) row(`${n * 100}% of MLP neurons per layer`, structuredPrune(model, { neuronFraction: n }))
const md = [`Sort (CI size), ${model.numParams().toLocaleString("en")}-parameter model (d64, 2 layers, 4 heads) trained ${steps} steps (${(r.elapsedMs / 1000).toFixed(0)} s on ${backend.name}); 100 held-out questions, greedy; no fine-tuning after pruning.`, "", ...rows, ""].join("\n")
fs.writeFileSync(out, md)
console.log(md)
