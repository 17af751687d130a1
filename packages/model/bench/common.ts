// Shared by the benchmark and the profiler: backend set-up, configurations, a model factory
// (the model helper's GPT when packages/model/src/gpt.ts exists, else bench/ref-gpt.ts).
import * as tf from "@tensorflow/tfjs"
import { RefGPT, refTrainStep } from "./ref-gpt.js"

export type Backend = "native" | "wasm" | "cpu"

export interface BenchConfig {
  name: string
  vocabSize: number
  contextLength: number
  dModel: number
  nLayers: number
  nHeads: number
  batch: number
}

// The three sizes of shared/COMPUTE.md (vocabulary 128, which gives their parameter counts).
export const CONFIGS: BenchConfig[] = [
  { name: "0.46M d96 L4 H4 T64 B16", vocabSize: 128, contextLength: 64, dModel: 96, nLayers: 4, nHeads: 4, batch: 16 },
  { name: "0.81M d128 L4 H4 T64 B16", vocabSize: 128, contextLength: 64, dModel: 128, nLayers: 4, nHeads: 4, batch: 16 },
  { name: "3.22M d256 L4 H8 T128 B8", vocabSize: 128, contextLength: 128, dModel: 256, nLayers: 4, nHeads: 8, batch: 8 },
]

/** Makes `name` the active tfjs backend (wasm with the model helper's kernel fixes). */
export async function useBackend(name: Backend): Promise<string> {
  if (name === "native") {
    const native = await import("../src/native/index.js")
    if (!native.available()) throw new Error(`native backend unavailable: ${native.reason()}`)
    await native.register()
    await tf.setBackend("native")
    return native.describe()
  }
  if (name === "wasm") {
    await import("@tensorflow/tfjs-backend-wasm")
    await tf.setBackend("wasm")
    await tf.ready()
    let fixes = "stock wasm (no src/wasm-kernels.ts)"
    try {
      const spec = "../src/wasm-kernels.js"
      const mod = (await import(spec)) as { installWasmKernelFixes(): { installed: boolean; reason: string } }
      const r = mod.installWasmKernelFixes()
      fixes = r.installed ? "wasm + kernel fixes" : `stock wasm (${r.reason})`
    } catch (e) {
      fixes = `stock wasm (${(e as Error).message.split("\n")[0]})`
    }
    return fixes
  }
  await tf.setBackend("cpu")
  return "tfjs cpu (pure JS)"
}

/** Deterministic token batch [B,T] with its next-token targets. */
export function batchOf(cfg: BenchConfig, seed = 0): { ids: tf.Tensor2D; targets: tf.Tensor2D } {
  let s = seed * 7919 + 17
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648), s % cfg.vocabSize)
  const seq = Array.from({ length: cfg.batch }, () => Array.from({ length: cfg.contextLength + 1 }, rnd))
  const ids = tf.tensor2d(seq.map((r) => r.slice(0, -1)), [cfg.batch, cfg.contextLength], "int32")
  const targets = tf.tensor2d(seq.map((r) => r.slice(1)), [cfg.batch, cfg.contextLength], "int32")
  return { ids, targets }
}

export type ModelPkg = {
  GPT: new (c: unknown, o?: { seed?: number }) => {
    params: Map<string, tf.Variable>
    numParams(): number
    hidden(ids: tf.Tensor2D, o?: { training?: boolean }): tf.Tensor2D
    head(h: tf.Tensor2D): tf.Tensor2D
    dispose?(): void
  }
  makeConfig(c: Record<string, unknown>): unknown
  makeTrainConfig(c: Record<string, unknown>): unknown
  AdamW: new (p: Map<string, tf.Variable>) => { m: Map<string, tf.Variable>; v: Map<string, tf.Variable>; step(g: Map<string, tf.Tensor>, s: tf.Scalar, t: number, lr: number, c: unknown, o?: { fused?: boolean }): void }
  maskedCrossEntropy(l: tf.Tensor2D, t: tf.Tensor1D, w: tf.Tensor1D): tf.Scalar
  generateTokens(model: unknown, prompts: number[][], o: Record<string, unknown>): Generator<(number | undefined)[], void, boolean[] | undefined>
}

export async function modelPkg(): Promise<ModelPkg | undefined> {
  try {
    const spec = "../src/index.js" // a variable: the bench also runs before the model package has its GPT
    const m = (await import(spec)) as Partial<ModelPkg>
    return m.GPT && m.AdamW && m.generateTokens ? (m as ModelPkg) : undefined
  } catch {
    return undefined
  }
}

export function gptConfig(pkg: ModelPkg, c: BenchConfig) {
  return pkg.makeConfig({ vocabSize: c.vocabSize, contextLength: c.contextLength, dModel: c.dModel, nLayers: c.nLayers, nHeads: c.nHeads })
}

export interface Trainer {
  numParams: number
  source: string
  step(ids: tf.Tensor2D, targets: tf.Tensor2D): number
}

/**
 * One Adam step per call: the model package's GPT + AdamW when present, else bench/ref-gpt.ts.
 * variant "engine": what src/train.ts runs (on native: fused training ops and the fused in-place
 * AdamW); "before": the same model with tfjs-op GELU/norms/softmax (MOA_FUSED_OPS=0) and the
 * tensor-level AdamW — the native backend as it was before those were fused.
 */
export async function makeTrainer(cfg: BenchConfig, lr = 1e-3, variant: "engine" | "before" = "engine"): Promise<Trainer> {
  const pkg = await modelPkg()
  if (pkg) {
    if (variant === "before") process.env.MOA_FUSED_OPS = "0"
    const model = new pkg.GPT(gptConfig(pkg, cfg), { seed: 1 })
    const opt = new pkg.AdamW(model.params)
    const tc = pkg.makeTrainConfig({ lr, weightDecay: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8 })
    const names = [...model.params.keys()]
    const vars = names.map((n) => model.params.get(n)!)
    const w = tf.ones([cfg.batch * cfg.contextLength]) as tf.Tensor1D
    const one = tf.scalar(1)
    let t = 0
    return {
      numParams: model.numParams(),
      source: `src/gpt.ts + src/train.ts AdamW${variant === "before" ? " (MOA_FUSED_OPS=0, tensor-level AdamW)" : ""}`,
      step: (ids, targets) => tf.tidy(() => {
        const t1 = tf.reshape(targets, [-1]) as tf.Tensor1D
        const { value, grads } = tf.variableGrads(() => pkg.maskedCrossEntropy(model.head(model.hidden(ids, { training: true })), t1, w), vars)
        t++
        opt.step(new Map(names.map((n, i) => [n, grads[vars[i].name]])), one, t, lr, tc, { fused: variant !== "before" })
        return value.dataSync()[0]
      }),
    }
  }
  const model = new RefGPT(cfg)
  const opt = tf.train.adam(lr, 0.9, 0.999, 1e-8)
  return { numParams: model.numParams(), source: "bench/ref-gpt.ts", step: (ids, targets) => refTrainStep(model, opt, ids, targets) }
}

/** Wraps every kernel of `backend` with a timer; returns the accumulator and an undo function. */
export function instrumentKernels(backend: string): { stats: Map<string, { ms: number; calls: number }>; undo: () => void } {
  const stats = new Map<string, { ms: number; calls: number }>()
  const originals = tf.getKernelsForBackend(backend)
  for (const cfg of originals) {
    const fn = cfg.kernelFunc
    const name = cfg.kernelName
    tf.unregisterKernel(name, backend)
    tf.registerKernel({
      ...cfg,
      kernelFunc: ((args: Parameters<tf.KernelFunc>[0]) => {
        const t0 = performance.now()
        const r = fn(args)
        const dt = performance.now() - t0
        const s = stats.get(name) ?? { ms: 0, calls: 0 }
        s.ms += dt
        s.calls++
        stats.set(name, s)
        return r
      }) as tf.KernelFunc,
    })
  }
  return {
    stats,
    undo: () => {
      for (const cfg of originals) {
        tf.unregisterKernel(cfg.kernelName, backend)
        tf.registerKernel(cfg)
      }
    },
  }
}
