// Where the time of a training step goes, per kernel, on one backend.
//   npx tsx packages/model/bench/profile.ts <native|wasm|cpu> [configIndex=1] [steps=5] [before]
//   (before: tfjs-op GELU/norms/softmax and the tensor-level AdamW, as native was before fusing)
// Prints a markdown table: kernel, calls/step, ms/step, share of the step.
import * as tf from "@tensorflow/tfjs"
import { CONFIGS, batchOf, instrumentKernels, makeTrainer, useBackend, type Backend } from "./common.js"

const backend = (process.argv[2] ?? "native") as Backend
const cfg = CONFIGS[Number(process.argv[3] ?? 1)]
const steps = Number(process.argv[4] ?? 5)
const desc = await useBackend(backend)
const trainer = await makeTrainer(cfg, 1e-3, process.argv[5] === "before" ? "before" : "engine")
const { ids, targets } = batchOf(cfg)
for (let i = 0; i < 2; i++) trainer.step(ids, targets) // warm-up

let t0 = performance.now()
const c0 = process.cpuUsage()
for (let i = 0; i < steps; i++) trainer.step(ids, targets)
const plainMs = (performance.now() - t0) / steps
const cpu = process.cpuUsage(c0)
const cpuMs = (cpu.user + cpu.system) / 1000 / steps

const { stats, undo } = instrumentKernels(tf.getBackend())
t0 = performance.now()
for (let i = 0; i < steps; i++) trainer.step(ids, targets)
const instrMs = (performance.now() - t0) / steps
undo()

const rows = [...stats.entries()].sort((a, b) => b[1].ms - a[1].ms)
const kernelMs = rows.reduce((s, [, v]) => s + v.ms, 0) / steps
const tokens = cfg.batch * cfg.contextLength
console.log(`### ${backend} — ${cfg.name} (${desc}; model ${trainer.source})\n`)
console.log(`step ${plainMs.toFixed(1)} ms (${Math.round((tokens / plainMs) * 1000)} tokens/s), ${cpuMs.toFixed(1)} ms of CPU time (${Math.round((tokens / cpuMs) * 1000)} tokens per CPU-second); ` +
  `instrumented step ${instrMs.toFixed(1)} ms, of which inside kernels ${kernelMs.toFixed(1)} ms ` +
  `and outside (tape, engine, JS, GC) ${(instrMs - kernelMs).toFixed(1)} ms; ${rows.reduce((s, [, v]) => s + v.calls, 0) / steps} kernel calls/step\n`)
console.log("| kernel | calls/step | ms/step | share of step |\n|---|---:|---:|---:|")
for (const [name, v] of rows.slice(0, 18)) {
  console.log(`| ${name} | ${v.calls / steps} | ${(v.ms / steps).toFixed(2)} | ${((v.ms / steps / instrMs) * 100).toFixed(1)}% |`)
}
