/**
 * Pruning: magnitude (unstructured, each linear weight to a sparsity target) and structured
 * (whole attention heads, whole MLP neurons, the least important first). Pruned weights are
 * set to zero in place; structured pruning also reports the size a compacted model would have
 * once the zeroed rows and columns are cut out. Linear weights are [in, out] in memory.
 */
import * as tf from "@tensorflow/tfjs"
import type { HookableModel } from "./peft/hook.ts"

export interface PruneReport {
  /** parameters of the whole model */
  readonly params: number
  /** parameters that are exactly zero after pruning */
  readonly zeros: number
  /** parameters left if zeroed heads/neurons were cut out (structured pruning only) */
  readonly compactParams?: number
  readonly detail: string
}

const countZeros = (model: HookableModel): { params: number; zeros: number } => {
  let params = 0
  let zeros = 0
  for (const v of model.params.values()) {
    params += v.size
    const d = v.dataSync()
    for (let i = 0; i < d.length; i++) if (d[i] === 0) zeros++
  }
  return { params, zeros }
}

/**
 * Zero the smallest-magnitude fraction `sparsity` of each selected linear weight (default: every
 * linear layer). Biases, norms and embeddings are kept.
 */
export const magnitudePrune = (model: HookableModel, sparsity: number, targets: ReadonlyArray<string> = model.linearNames()): PruneReport => {
  if (!(sparsity >= 0 && sparsity < 1)) throw new Error(`magnitudePrune: sparsity must be in [0, 1), got ${sparsity}`)
  for (const name of targets) {
    const w = model.params.get(`${name}.weight`)
    if (!w) throw new Error(`magnitudePrune: no linear layer "${name}"`)
    const d = w.dataSync() as Float32Array
    const k = Math.floor(sparsity * d.length)
    if (k === 0) continue
    const mags = Float32Array.from(d, Math.abs).sort()
    const threshold = mags[k - 1]!
    const out = Float32Array.from(d)
    let removed = 0
    // zero everything below the threshold, then ties at it until exactly k are zero
    for (let i = 0; i < out.length; i++) if (Math.abs(out[i]!) < threshold) (out[i] = 0), removed++
    for (let i = 0; i < out.length && removed < k; i++) if (out[i] !== 0 && Math.abs(out[i]!) === threshold) (out[i] = 0), removed++
    w.assign(tf.tensor(out, w.shape))
  }
  const { params, zeros } = countZeros(model)
  return { params, zeros, detail: `magnitude ${(100 * sparsity).toFixed(0)}% of ${targets.length} linear weights` }
}

interface Shapes {
  readonly nLayers: number
  readonly nHeads: number
  readonly dModel: number
}

const zeroRows = (v: tf.Variable, rows: ReadonlyArray<number>) => {
  if (rows.length === 0) return
  const [R, C] = v.shape as [number, number]
  const d = Float32Array.from(v.dataSync() as Float32Array)
  for (const r of rows) d.fill(0, r * C, (r + 1) * C)
  v.assign(tf.tensor2d(d, [R, C]))
}
const zeroCols = (v: tf.Variable, cols: ReadonlyArray<number>) => {
  if (cols.length === 0) return
  const d = Float32Array.from(v.dataSync() as Float32Array)
  if (v.rank === 1) for (const c of cols) d[c] = 0
  else {
    const [R, C] = v.shape as [number, number]
    for (let r = 0; r < R; r++) for (const c of cols) d[r * C + c] = 0
  }
  v.assign(tf.tensor(d, v.shape))
}
const rowNorms = (v: tf.Variable): number[] => Array.from(tf.tidy(() => tf.sqrt(tf.sum(tf.square(v), 1))).dataSync())
const colNorms = (v: tf.Variable): number[] => Array.from(tf.tidy(() => tf.sqrt(tf.sum(tf.square(v), 0))).dataSync())
const lowest = (scores: number[], k: number): number[] =>
  scores
    .map((s, i) => [s, i] as const)
    .sort((a, b) => a[0] - b[0])
    .slice(0, k)
    .map(([, i]) => i)

/**
 * Remove the `headFraction` least important attention heads and the `neuronFraction` least
 * important MLP neurons of every layer. A head's importance is ‖its v_proj columns‖·‖its o_proj
 * rows‖; a neuron's is ‖its fc_in column‖·‖its fc_out row‖. Removing a head zeroes its q/k/v
 * columns (and biases) and its o_proj rows; removing a neuron zeroes its fc_in column (and bias)
 * and its fc_out row, so the unit contributes nothing.
 */
export const structuredPrune = (model: HookableModel & { config: Shapes }, o: { headFraction?: number; neuronFraction?: number }): PruneReport => {
  const { nLayers, nHeads, dModel } = model.config
  const hs = dModel / nHeads
  const hf = o.headFraction ?? 0
  const nf = o.neuronFraction ?? 0
  if (!(hf >= 0 && hf < 1) || !(nf >= 0 && nf < 1)) throw new Error("structuredPrune: fractions must be in [0, 1) (at least one head and one neuron stay)")
  const p = (n: string) => {
    const v = model.params.get(n)
    if (!v) throw new Error(`structuredPrune: the model has no parameter "${n}"`)
    return v
  }
  const maybe = (n: string) => model.params.get(n)
  let removedParams = 0
  const removed: string[] = []
  for (let i = 0; i < nLayers; i++) {
    const a = `h.${i}.attn`
    const kh = Math.floor(hf * nHeads)
    if (kh > 0) {
      const vcol = colNorms(p(`${a}.v_proj.weight`))
      const orow = rowNorms(p(`${a}.o_proj.weight`))
      const score = Array.from({ length: nHeads }, (_, h) => {
        let sv = 0
        let so = 0
        for (let j = h * hs; j < (h + 1) * hs; j++) (sv += vcol[j]! ** 2), (so += orow[j]! ** 2)
        return Math.sqrt(sv) * Math.sqrt(so)
      })
      const heads = lowest(score, kh)
      const cols = heads.flatMap((h) => Array.from({ length: hs }, (_, j) => h * hs + j))
      for (const proj of ["q_proj", "k_proj", "v_proj"]) {
        zeroCols(p(`${a}.${proj}.weight`), cols)
        const b = maybe(`${a}.${proj}.bias`)
        if (b) zeroCols(b, cols)
      }
      zeroRows(p(`${a}.o_proj.weight`), cols)
      removedParams += cols.length * (4 * dModel + (maybe(`${a}.q_proj.bias`) ? 3 : 0))
      removed.push(`layer ${i} heads ${heads.sort().join(",")}`)
    }
    const m = `h.${i}.mlp`
    const fin = p(`${m}.fc_in.weight`)
    const F = fin.shape[1]!
    const kn = Math.floor(nf * F)
    if (kn > 0) {
      const a1 = colNorms(fin)
      const a2 = rowNorms(p(`${m}.fc_out.weight`))
      const neurons = lowest(a1.map((x, j) => x * a2[j]!), kn)
      zeroCols(fin, neurons)
      const b = maybe(`${m}.fc_in.bias`)
      if (b) zeroCols(b, neurons)
      zeroRows(p(`${m}.fc_out.weight`), neurons)
      removedParams += kn * (2 * dModel + (b ? 1 : 0))
      removed.push(`layer ${i} ${kn}/${F} neurons`)
    }
  }
  const { params, zeros } = countZeros(model)
  return { params, zeros, compactParams: params - removedParams, detail: `structured: ${removed.join("; ") || "nothing"}` }
}
