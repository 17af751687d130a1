// Reference log-probs, computed once and cached, so no second (frozen) model stays in memory
// while the policy trains (TRL's `precompute_ref_log_probs`). The cache is one JSONL file per
// (model weights, dataset, kind), named by a SHA-256 of all three.
import { createHash } from "node:crypto"
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { klMismatchIndices } from "./kto.ts"
import { completionLogps, type PolicyModel, type TokenLabelled, type TokenPair } from "./policy.ts"

/** Reference log-probs of one preference pair: sums over completion tokens, and token counts. */
export interface PairReference {
  chosen: number
  chosenTokens: number
  rejected: number
  rejectedTokens: number
}

/** Reference log-probs of one labelled completion and of its mismatched KL pair. */
export interface LabelledReference {
  completion: number
  kl: number
}

/** SHA-256 over every parameter's name, shape and float32 bytes, in name order. */
export function modelHash(model: PolicyModel): string {
  const h = createHash("sha256")
  for (const name of [...model.params.keys()].sort()) {
    const v = model.params.get(name)!
    h.update(`${name}:${v.shape.join("x")}:${v.dtype};`)
    const data = v.dataSync()
    h.update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
  }
  return h.digest("hex")
}

export function dataHash(data: unknown): string {
  return createHash("sha256").update(JSON.stringify(data)).digest("hex")
}

export interface ReferenceCacheOptions {
  /** Folder for the cache files; without it nothing is written or read. */
  cacheDir?: string
  /** Examples per forward pass. */
  batchSize?: number
}

export interface CachedReference<R> {
  values: R[]
  /** The cache file's key (sha256 of model hash, data hash and kind). */
  key: string
  /** True when the values came from the cache file. */
  fromCache: boolean
  file?: string
}

function cached<R>(kind: string, model: PolicyModel, data: unknown, n: number, opts: ReferenceCacheOptions, compute: () => R[]): CachedReference<R> {
  const model_ = modelHash(model)
  const data_ = dataHash(data)
  const key = createHash("sha256").update(`${kind}\n${model_}\n${data_}`).digest("hex").slice(0, 32)
  if (opts.cacheDir === undefined) return { values: compute(), key, fromCache: false }
  const file = join(opts.cacheDir, `ref-${kind}-${key}.jsonl`)
  if (existsSync(file)) {
    const lines = readFileSync(file, "utf8").trim().split("\n")
    const header = JSON.parse(lines[0])
    if (header.key === key && header.count === n && lines.length === n + 1) {
      return { values: lines.slice(1).map((l) => JSON.parse(l) as R), key, fromCache: true, file }
    }
  }
  const values = compute()
  mkdirSync(opts.cacheDir, { recursive: true })
  const header = { key, kind, model: model_, data: data_, count: n, createdAt: new Date().toISOString() }
  const tmp = `${file}.${process.pid}.tmp`
  writeFileSync(tmp, [JSON.stringify(header), ...values.map((v) => JSON.stringify(v))].join("\n") + "\n")
  renameSync(tmp, file)
  return { values, key, fromCache: false, file }
}

/**
 * Run the frozen reference (the model as it is now) once over preference pairs and keep, per pair,
 * the summed log-probs of chosen and rejected and their token counts (for IPO's averages).
 */
export function precomputePairReference(model: PolicyModel, pairs: TokenPair[], opts: ReferenceCacheOptions = {}): CachedReference<PairReference> {
  return cached("pairs", model, pairs, pairs.length, opts, () => {
    const bs = opts.batchSize ?? 32
    const c = completionLogps(model, pairs.map((p) => ({ prompt: p.prompt, completion: p.chosen })), bs)
    const r = completionLogps(model, pairs.map((p) => ({ prompt: p.prompt, completion: p.rejected })), bs)
    return pairs.map((_, i) => ({ chosen: c.sum[i], chosenTokens: c.tokens[i], rejected: r.sum[i], rejectedTokens: r.tokens[i] }))
  })
}

/**
 * The mismatched KL pairs KTO uses: inside each consecutive chunk of `batchSize` examples,
 * prompt i goes with completion i−1 (rotated by one, as TRL's `_get_kl_dataset`).
 */
export function klPairs(examples: TokenLabelled[], batchSize: number): { prompt: number[]; completion: number[] }[] {
  const out: { prompt: number[]; completion: number[] }[] = []
  for (let s = 0; s < examples.length; s += batchSize) {
    const chunk = examples.slice(s, s + batchSize)
    const idx = klMismatchIndices(chunk.length)
    chunk.forEach((ex, i) => out.push({ prompt: ex.prompt, completion: chunk[idx[i]].completion }))
  }
  return out
}

/** Reference log-probs for KTO: each labelled completion and its mismatched KL pair. */
export function precomputeLabelledReference(
  model: PolicyModel,
  examples: TokenLabelled[],
  klBatchSize: number,
  opts: ReferenceCacheOptions = {},
): CachedReference<LabelledReference> {
  return cached("labelled", model, { examples, klBatchSize }, examples.length, opts, () => {
    const bs = opts.batchSize ?? 32
    const c = completionLogps(model, examples, bs)
    const k = completionLogps(model, klPairs(examples, klBatchSize), bs)
    return examples.map((_, i) => ({ completion: c.sum[i], kl: k.sum[i] }))
  })
}

