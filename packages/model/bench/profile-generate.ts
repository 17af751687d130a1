// Where the time of KV-cache decoding goes, per kernel (single stream, greedy).
//   npx tsx packages/model/bench/profile-generate.ts <native|wasm|cpu> [configIndex=1] [tokens=32]
import * as tf from "@tensorflow/tfjs"
import { CONFIGS, gptConfig, instrumentKernels, modelPkg, useBackend, type Backend } from "./common.js"

const backend = (process.argv[2] ?? "native") as Backend
const cfg = CONFIGS[Number(process.argv[3] ?? 1)]
const tokens = Number(process.argv[4] ?? 32)
const desc = await useBackend(backend)
const pkg = await modelPkg()
if (!pkg) throw new Error("needs the model package's GPT (src/gpt.ts)")
const model = new pkg.GPT(gptConfig(pkg, cfg), { seed: 1 })
const run = () => {
  const t0 = performance.now()
  let n = 0
  for (const _ of pkg.generateTokens(model, [[1, 2, 3, 4]], { maxTokens: tokens, temperature: 0, cache: true, stopAtEos: false })) n++
  return { n, ms: performance.now() - t0 }
}
run()
const plain = run()
const { stats, undo } = instrumentKernels(tf.getBackend())
const instr = run()
undo()
const rows = [...stats.entries()].sort((a, b) => b[1].ms - a[1].ms)
const kernelMs = rows.reduce((s, [, v]) => s + v.ms, 0)
const calls = rows.reduce((s, [, v]) => s + v.calls, 0)
console.log(`### decode ${backend} — ${cfg.name} (${desc})\n`)
console.log(`${(plain.n / plain.ms * 1000).toFixed(0)} tokens/s (${(plain.ms / plain.n).toFixed(2)} ms/token); instrumented ${(instr.ms / instr.n).toFixed(2)} ms/token, ` +
  `inside kernels ${(kernelMs / instr.n).toFixed(2)} ms, ${(calls / instr.n).toFixed(0)} kernel calls/token (${((instr.ms - kernelMs) * 1000 / calls).toFixed(1)} µs outside kernels per call)\n`)
console.log("| kernel | calls/token | µs/token |\n|---|---:|---:|")
for (const [name, v] of rows.slice(0, 14)) console.log(`| ${name} | ${(v.calls / instr.n).toFixed(1)} | ${(v.ms * 1000 / instr.n).toFixed(0)} |`)
