// Numerical parity with PyTorch: the same model.safetensors and batch through our GPT and through
// bench/torch_gpt.py; compares logits, loss and the gradients of one training step.
//   npx tsx packages/model/bench/parity.ts [--backend native|wasm|cpu] [--json]
// Exits 1 when max |Δlogits| > 1e-4, |Δloss| > 1e-4 or max |Δgrad| > 1e-3 × the largest gradient.
import { spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import os from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"
import * as tf from "@tensorflow/tfjs"
import { useBackend, type Backend } from "./common.js"

const here = path.dirname(fileURLToPath(import.meta.url))
export const PYTHON = "/usr/bin/python3"

export interface ParityResult {
  config: string
  backend: string
  maxLogitDiff: number
  loss: number
  torchLoss: number
  lossDiff: number
  maxGradDiff: number
  worstGrad: string
  maxGradRel: number
  gradCount: number
  ok: boolean
}

type Pkg = {
  GPT: new (c: unknown, o?: { seed?: number }) => { params: Map<string, tf.Variable>; linearNames(): string[]; hidden(ids: tf.Tensor2D): tf.Tensor2D; head(h: tf.Tensor2D): tf.Tensor2D }
  makeConfig(c: Record<string, unknown>): Record<string, unknown>
  maskedCrossEntropy(l: tf.Tensor2D, t: tf.Tensor1D, w: tf.Tensor1D): tf.Scalar
  modelTensors(m: unknown): Map<string, { dtype: "F32"; shape: number[]; data: Float32Array }>
  encodeSafetensors(t: Map<string, { dtype: "F32"; shape: number[]; data: Float32Array }>): Uint8Array
}

/** Runs the check for one config on the active backend. Throws when torch or the model package is missing. */
export async function parity(partial: Record<string, unknown>, seed = 3): Promise<ParityResult> {
  const spec = "../src/index.js"
  const pkg = (await import(spec)) as Pkg
  const config = pkg.makeConfig(partial)
  const model = new pkg.GPT(config, { seed })
  const V = config.vocabSize as number, T = config.contextLength as number, B = 3
  let s = seed
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648), s % V)
  const seq = Array.from({ length: B }, () => Array.from({ length: T + 1 }, rnd))
  const idsA = seq.map((r) => r.slice(0, -1)), tgtA = seq.map((r) => r.slice(1))
  const dir = mkdtempSync(path.join(os.tmpdir(), "moa-parity-"))
  try {
    writeFileSync(path.join(dir, "config.json"), JSON.stringify(config))
    writeFileSync(path.join(dir, "model.safetensors"), pkg.encodeSafetensors(pkg.modelTensors(model)))
    writeFileSync(path.join(dir, "batch.json"), JSON.stringify({ ids: idsA, targets: tgtA }))
    const ours = new Map<string, { dtype: "F32"; shape: number[]; data: Float32Array }>()
    const linear = new Set(model.linearNames().map((n) => `${n}.weight`))
    tf.tidy(() => {
      const ids = tf.tensor2d(idsA, [B, T], "int32")
      const targets = tf.tensor1d(tgtA.flat(), "int32")
      const w = tf.ones([B * T]) as tf.Tensor1D
      const names = [...model.params.keys()]
      const vars = names.map((n) => model.params.get(n)!)
      const logits = model.head(model.hidden(ids))
      ours.set("logits", { dtype: "F32", shape: logits.shape, data: logits.dataSync() as Float32Array })
      const { value, grads } = tf.variableGrads(() => pkg.maskedCrossEntropy(model.head(model.hidden(ids)), targets, w), vars)
      ours.set("loss", { dtype: "F32", shape: [], data: Float32Array.of(value.dataSync()[0]) })
      names.forEach((n, i) => {
        const g = linear.has(n) ? tf.transpose(grads[vars[i].name]) : grads[vars[i].name] // file layout [out, in]
        ours.set(`grad.${n}`, { dtype: "F32", shape: g.shape, data: g.dataSync() as Float32Array })
      })
    })
    writeFileSync(path.join(dir, "ours.safetensors"), pkg.encodeSafetensors(ours))
    const r = spawnSync(PYTHON, [path.join(here, "parity.py"), dir], { encoding: "utf8", env: { ...process.env, OMP_NUM_THREADS: "1" } })
    if (r.status !== 0) throw new Error(`parity.py failed: ${(r.stderr || r.stdout).trim().split("\n").slice(-4).join(" | ")}`)
    const py = JSON.parse(r.stdout.trim().split("\n").pop()!)
    const desc = `d${config.dModel} L${config.nLayers} H${config.nHeads} T${T} V${V} ${config.norm} ${config.position} bias=${config.bias} tied=${config.tiedEmbeddings}`
    const ok = py.maxLogitDiff <= 1e-4 && py.lossDiff <= 1e-4 && py.maxGradRel <= 1e-3
    return { config: desc, backend: tf.getBackend(), ...py, ok }
  } finally {
    for (const v of model.params.values()) v.dispose()
    rmSync(dir, { recursive: true, force: true })
  }
}

/** True when /usr/bin/python3 can import torch. */
export function torchAvailable(): boolean {
  if (!existsSync(PYTHON)) return false
  return spawnSync(PYTHON, ["-c", "import torch"], { stdio: "ignore" }).status === 0
}

export const PARITY_CONFIGS: Record<string, unknown>[] = [
  { vocabSize: 61, contextLength: 24, dModel: 64, nLayers: 2, nHeads: 4 }, // layernorm, learned, tied, bias
  { vocabSize: 61, contextLength: 24, dModel: 64, nLayers: 2, nHeads: 4, norm: "rmsnorm", position: "rope", tiedEmbeddings: false, bias: false },
]

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2)
  const bi = args.indexOf("--backend")
  let backend = (bi >= 0 ? args[bi + 1] : undefined) as Backend | undefined
  if (!backend) backend = (await import("../src/native/index.js")).available() ? "native" : "cpu"
  if (!torchAvailable()) {
    console.error(`parity: ${PYTHON} cannot import torch (Debian: apt-get install python3-torch)`)
    process.exit(2)
  }
  await useBackend(backend)
  const results: ParityResult[] = []
  for (const c of PARITY_CONFIGS) results.push(await parity(c))
  for (const r of results) {
    console.error(`${r.ok ? "ok  " : "FAIL"} ${r.config} on ${r.backend}: max|Δlogits| ${r.maxLogitDiff.toExponential(2)}, |Δloss| ${r.lossDiff.toExponential(2)}, ` +
      `max|Δgrad| ${r.maxGradDiff.toExponential(2)} (${r.worstGrad}; ${r.maxGradRel.toExponential(2)} of the largest gradient)`)
  }
  if (args.includes("--json")) {
    const worst = (k: keyof ParityResult) => Math.max(...results.map((r) => r[k] as number))
    console.log("@@RESULT " + JSON.stringify({
      ...results[0], config: results.map((r) => r.config).join(" and "),
      maxLogitDiff: worst("maxLogitDiff"), lossDiff: worst("lossDiff"), maxGradDiff: worst("maxGradDiff"), maxGradRel: worst("maxGradRel"),
      gradCount: results.reduce((a, r) => a + r.gradCount, 0), ok: results.every((r) => r.ok), runs: results,
    }))
  }
  process.exit(results.every((r) => r.ok) ? 0 : 1)
}
