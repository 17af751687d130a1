// Prompt features for the gate.
//
// The default extractor hashes character n-grams of the prompt into a fixed-size vector
// (the "hashing trick"): no model, no vocabulary, microseconds per prompt. A second
// extractor plugs in any function that maps prompts to vectors, e.g. the base model's
// mean-pooled hidden states; `compareFeatures` (train.ts) measures which one routes better.

export interface FeatureExtractor {
  /** Serialisable description, stored beside the gate weights so a loaded gate rebuilds its features. */
  readonly spec: FeatureSpec
  readonly dim: number
  extract(prompts: ReadonlyArray<string>): Promise<Float32Array[]>
}

export type FeatureSpec =
  | { readonly kind: "ngram"; readonly dim: number; readonly minN: number; readonly maxN: number }
  | { readonly kind: "external"; readonly dim: number; readonly name: string }

/** FNV-1a, 32-bit: a small, stable string hash (the same bucket on every machine and run). */
export const fnv1a = (s: string): number => {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

/**
 * Hashed character n-grams of `^prompt$` for n in [minN, maxN], plus whole words.
 * Each n-gram adds ±1 (the sign comes from a second hash, so collisions cancel on average)
 * to one of `dim` buckets; the vector is L2-normalised so long and short prompts compare.
 */
export const ngramVector = (prompt: string, dim: number, minN: number, maxN: number): Float32Array => {
  const v = new Float32Array(dim)
  const s = `^${prompt.normalize("NFC").toLowerCase()}$`
  const add = (gram: string) => {
    const h = fnv1a(gram)
    const sign = fnv1a(`#${gram}`) & 1 ? 1 : -1
    v[h % dim] += sign
  }
  for (let n = minN; n <= maxN; n++) {
    for (let i = 0; i + n <= s.length; i++) add(`${n}:${s.slice(i, i + n)}`)
  }
  for (const word of s.slice(1, -1).split(/\s+/)) if (word) add(`w:${word}`)
  let norm = 0
  for (let i = 0; i < dim; i++) norm += v[i] * v[i]
  norm = Math.sqrt(norm) || 1
  for (let i = 0; i < dim; i++) v[i] /= norm
  return v
}

export const ngramFeatures = (opts: { dim?: number; minN?: number; maxN?: number } = {}): FeatureExtractor => {
  const spec = { kind: "ngram" as const, dim: opts.dim ?? 1024, minN: opts.minN ?? 1, maxN: opts.maxN ?? 3 }
  if (!Number.isInteger(spec.dim) || spec.dim < 8) throw new Error(`ngram feature dim must be an integer ≥ 8, got ${spec.dim}`)
  if (spec.minN < 1 || spec.maxN < spec.minN) throw new Error(`ngram sizes must satisfy 1 ≤ minN ≤ maxN, got ${spec.minN}..${spec.maxN}`)
  return {
    spec,
    dim: spec.dim,
    extract: async (prompts) => prompts.map((p) => ngramVector(p, spec.dim, spec.minN, spec.maxN)),
  }
}

/**
 * Features from any embedding function (e.g. the base model's mean-pooled last hidden state).
 * Vectors are L2-normalised like the n-gram ones so the same gate hyper-parameters apply.
 */
export const externalFeatures = (
  name: string,
  dim: number,
  embed: (prompts: ReadonlyArray<string>) => Promise<ReadonlyArray<ArrayLike<number>>>,
): FeatureExtractor => ({
  spec: { kind: "external", dim, name },
  dim,
  extract: async (prompts) => {
    const rows = await embed(prompts)
    if (rows.length !== prompts.length) throw new Error(`feature extractor "${name}" returned ${rows.length} rows for ${prompts.length} prompts`)
    return rows.map((row, i) => {
      if (row.length !== dim) throw new Error(`feature extractor "${name}" returned a vector of length ${row.length} for prompt ${i}; the gate expects ${dim}`)
      const v = Float32Array.from(row)
      let norm = 0
      for (let j = 0; j < dim; j++) norm += v[j] * v[j]
      norm = Math.sqrt(norm) || 1
      for (let j = 0; j < dim; j++) v[j] /= norm
      return v
    })
  },
})

/** Rebuild an extractor from its stored spec; an external one needs its embed function passed in. */
export const featuresFromSpec = (
  spec: FeatureSpec,
  external?: Record<string, (prompts: ReadonlyArray<string>) => Promise<ReadonlyArray<ArrayLike<number>>>>,
): FeatureExtractor => {
  if (spec.kind === "ngram") return ngramFeatures(spec)
  const embed = external?.[spec.name]
  if (!embed) throw new Error(`the gate was trained on "${spec.name}" features; pass an embed function for "${spec.name}" when loading it`)
  return externalFeatures(spec.name, spec.dim, embed)
}
