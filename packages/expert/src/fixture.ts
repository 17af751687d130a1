/**
 * A tiny checkpoint trained in seconds, for tests, the benchmark and examples: a character
 * tokenizer and a small GPT taught one toy skill (`rev abc` → `cba`). It is a real model that
 * really learned (its greedy answers are mostly right), small enough to build in a test's setup.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { type BackendName, CharTokenizer, GPT, encodeExample, initBackend, makeConfig, saveCheckpoint, train, type GPTConfig } from "@moa/model"

export interface TinyCheckpointOptions {
  /** model size overrides (default d32, 1 layer, 2 heads, context 24) */
  readonly config?: Partial<GPTConfig>
  readonly steps?: number
  readonly seed?: number
  /** backend to train on (default: MOA_BACKEND or the model's default order) */
  readonly backend?: BackendName
}

const LETTERS = "abcdefgh"

/** `rev <word>` → reversed word, words of 2–5 letters from a–h (seeded). */
export function toyExamples(n: number, seed = 1): { prompt: string; completion: string }[] {
  let s = seed >>> 0 || 1
  const r = () => ((s = (s * 1103515245 + 12345) >>> 0), s / 2 ** 32)
  return Array.from({ length: n }, () => {
    const len = 2 + Math.floor(r() * 4)
    const w = Array.from({ length: len }, () => LETTERS[Math.floor(r() * LETTERS.length)]).join("")
    return { prompt: `rev ${w}`, completion: [...w].reverse().join("") }
  })
}

/** The alphabet the tiny tokenizer knows (every toy prompt/completion and the usual punctuation). */
export const TINY_ALPHABET = [..." abcdefghijklmnopqrstuvwxyz0123456789.,:;!?-+=*/()'\""]

/**
 * Train and save the tiny checkpoint into `dir` (HF layout: config.json, model.safetensors,
 * tokenizer.json). Returns what was written. Idempotent: an existing checkpoint is kept.
 */
export async function buildTinyCheckpoint(dir: string, o: TinyCheckpointOptions = {}): Promise<{ dir: string; seconds: number; loss: number }> {
  if (fs.existsSync(path.join(dir, "model.safetensors"))) return { dir, seconds: 0, loss: NaN }
  await initBackend(o.backend)
  const tok = new CharTokenizer(TINY_ALPHABET, false)
  const config = makeConfig({ vocabSize: tok.vocabSize, contextLength: 24, dModel: 32, nLayers: 1, nHeads: 2, ...o.config })
  const model = new GPT(config, { seed: o.seed ?? 7 })
  const examples = toyExamples(1000, o.seed ?? 7).map((e) => encodeExample(tok, e))
  const t0 = performance.now()
  const res = await train({ model, train: examples, config: { steps: o.steps ?? 80, batchSize: 16, lr: 3e-3, warmupSteps: 20, seed: o.seed ?? 7 } })
  saveCheckpoint(dir, model, tok, { metadata: { name: "tiny-rev" } })
  model.dispose()
  return { dir, seconds: (performance.now() - t0) / 1000, loss: res.finalLoss }
}
