/**
 * A deliberately weak tiny expert for tests and the docs' results: a character GPT trained
 * briefly on a CI-size skill of packages/skills (e.g. `sort cab=` → `abc`), so its held-out
 * accuracy starts well below 100% and preference rounds have room to raise it.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { CharTokenizer, GPT, encodeExample, initBackend, makeConfig, saveCheckpoint, train, type BackendName, type GPTConfig } from "@moa/model"
import { format, generate, type SkillName } from "@moa/skills"

export interface WeakExpertOptions {
  readonly skill?: SkillName
  /** optimizer steps (few = weak; default 150) */
  readonly steps?: number
  readonly seed?: number
  readonly backend?: BackendName
  readonly config?: Partial<GPTConfig>
}

const ALPHABET = [..." abcdefghijklmnopqrstuvwxyz0123456789=+-"]

/** Train and save a weak skill expert into `dir` (kept when it exists). */
export async function buildWeakExpert(dir: string, o: WeakExpertOptions = {}): Promise<{ dir: string; seconds: number; loss: number }> {
  if (fs.existsSync(path.join(dir, "model.safetensors"))) return { dir, seconds: 0, loss: NaN }
  await initBackend(o.backend)
  const skill = o.skill ?? "sort"
  const tok = new CharTokenizer(ALPHABET, false)
  const config = makeConfig({ vocabSize: tok.vocabSize, contextLength: 32, dModel: 48, nLayers: 2, nHeads: 4, ...o.config })
  const model = new GPT(config, { seed: o.seed ?? 3 })
  const examples = generate(skill, { n: 2000, size: "ci", seed: o.seed ?? 3 }).map((e) => encodeExample(tok, format(e, { size: "ci" })))
  const t0 = performance.now()
  const res = await train({ model, train: examples, config: { steps: o.steps ?? 150, batchSize: 32, lr: 3e-3, warmupSteps: 10, seed: o.seed ?? 3 } })
  fs.mkdirSync(dir, { recursive: true })
  saveCheckpoint(dir, model, tok, { metadata: { name: `weak-${skill}` } })
  model.dispose()
  return { dir, seconds: (performance.now() - t0) / 1000, loss: res.finalLoss }
}
