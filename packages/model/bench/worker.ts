// One measurement in a fresh process (so backends and their thread pools do not interfere):
//   tsx bench/worker.ts train <backend> <configIndex> <steps> [before]  → one JSON line
//     (before: tfjs-op GELU/norms/softmax and the tensor-level AdamW, as native was before fusing)
//   tsx bench/worker.ts generate <backend> <configIndex>         → one JSON line
// Uses the model package's GPT + AdamW + generateTokens when src/gpt.ts exists (what users run),
// else bench/ref-gpt.ts with tf.train.adam for training (and no generation).
import * as tf from "@tensorflow/tfjs"
import { CONFIGS, batchOf, makeTrainer, modelPkg, gptConfig, useBackend, type Backend, type BenchConfig } from "./common.js"

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

async function train(backend: Backend, cfg: BenchConfig, steps: number, before: boolean) {
  const desc = await useBackend(backend)
  const { ids, targets } = batchOf(cfg)
  const tr = await makeTrainer(cfg, 1e-3, before ? "before" : "engine")
  const step = () => tr.step(ids, targets)
  const params = tr.numParams
  const source = tr.source
  const losses: number[] = []
  for (let i = 0; i < 2; i++) losses.push(step()) // warm-up
  const times: number[] = [], cpuTimes: number[] = []
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now(), c0 = process.cpuUsage()
    losses.push(step())
    const c = process.cpuUsage(c0)
    times.push(performance.now() - t0)
    cpuTimes.push((c.user + c.system) / 1000)
  }
  const ms = median(times)
  const best = Math.min(...times)
  return { kind: "train", backend, variant: before ? "before" : "engine", desc, source, config: cfg.name, params, steps, stepMs: ms, tokensPerSec: (cfg.batch * cfg.contextLength * 1000) / ms,
    bestStepMs: best, tokensPerSecBest: (cfg.batch * cfg.contextLength * 1000) / best,
    cpuMsPerStep: median(cpuTimes), tokensPerCpuSec: (cfg.batch * cfg.contextLength * 1000) / median(cpuTimes), losses }
}

async function generate(backend: Backend, cfg: BenchConfig) {
  const desc = await useBackend(backend)
  const pkg = await modelPkg()
  if (!pkg) return { kind: "generate", backend, config: cfg.name, skipped: "src/gpt.ts not present" }
  const model = new pkg.GPT(gptConfig(pkg, cfg), { seed: 1 })
  const rows: Record<string, unknown>[] = []
  const prompt = [1, 2, 3, 4]
  const maxTokens = cfg.contextLength - prompt.length
  for (const batch of [1, 4, 16]) {
    for (const cache of [true, false]) {
      if (!cache && batch === 16) continue // minutes per run; batch 1 and 4 show the cost of no cache
      const prompts = Array.from({ length: batch }, (_, b) => prompt.map((t) => (t + b) % cfg.vocabSize))
      let cpuMs = 0
      const run = (n: number) => {
        const perToken: number[] = []
        const c0 = process.cpuUsage()
        let t0 = performance.now()
        const it = pkg.generateTokens(model, prompts, { maxTokens: n, temperature: 0, cache, stopAtEos: false })
        for (let r = it.next(); !r.done; r = it.next()) {
          const t1 = performance.now()
          perToken.push(t1 - t0)
          t0 = t1
        }
        const c = process.cpuUsage(c0)
        cpuMs = (c.user + c.system) / 1000
        return perToken
      }
      run(8) // warm-up
      const perToken = run(maxTokens)
      const total = perToken.reduce((a, b) => a + b, 0)
      const q = Math.max(1, Math.floor(perToken.length / 4))
      const early = perToken.slice(1, 1 + q), late = perToken.slice(-q)
      rows.push({
        batch, cache, tokens: perToken.length * batch,
        tokensPerSec: (perToken.length * batch * 1000) / total,
        tokensPerCpuSec: (perToken.length * batch * 1000) / cpuMs,
        msPerStepEarly: median(early), msPerStepLate: median(late),
      })
    }
  }
  return { kind: "generate", backend, desc, config: cfg.name, maxTokens, rows }
}

const [mode, backend, ci, steps, variant] = process.argv.slice(2)
const cfg = CONFIGS[Number(ci)]
if (!cfg || !["native", "wasm", "cpu"].includes(backend)) {
  console.error("usage: tsx bench/worker.ts <train|generate> <native|wasm|cpu> <configIndex 0-2> [steps]")
  process.exit(2)
}
const out = mode === "train" ? await train(backend as Backend, cfg, Number(steps ?? 10), variant === "before") : await generate(backend as Backend, cfg)
console.log("@@RESULT " + JSON.stringify(out))
