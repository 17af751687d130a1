// The engine in process (no NATS): deadlines and cancellation, batch grouping rules, and the
// adapter hook being put back after serving work. The NATS-level behaviour is in agent.test.ts.
import { afterAll, beforeAll, expect, it } from "vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { CharTokenizer, GPT, initBackend, makeConfig } from "@moa/model"
import { Adapter, baseFingerprint } from "@moa/tune"
import type { MoaError } from "@moa/protocol"
import { AdapterStore, Engine, TINY_ALPHABET } from "../src/index.ts"

let model: GPT
let tok: CharTokenizer
let work: string

beforeAll(async () => {
  await initBackend("cpu")
  tok = new CharTokenizer(TINY_ALPHABET, false)
  model = new GPT(makeConfig({ vocabSize: tok.vocabSize, contextLength: 16, dModel: 16, nLayers: 1, nHeads: 2 }), { seed: 3 })
  work = fs.mkdtempSync(path.join(os.tmpdir(), "moa-engine-"))
})
afterAll(() => {
  model?.dispose()
  if (work) fs.rmSync(work, { recursive: true, force: true })
})

const reason = async (p: Promise<unknown>): Promise<MoaError> => {
  try {
    await p
  } catch (e) {
    return e as MoaError
  }
  throw new Error("expected a rejection")
}

it("never starts a request whose deadline has passed or that was cancelled", async () => {
  const e = new Engine(model, tok, "m", { windowMs: 5, maxBatch: 8 })
  const late = reason(e.generate({ prompt: "abc", temperature: 0, maxTokens: 4 }, { deadline: Date.now() - 1 }))
  const ac = new AbortController()
  ac.abort()
  const cancelled = reason(e.generate({ prompt: "abc", temperature: 0, maxTokens: 4 }, { signal: ac.signal }))
  const ok = e.generate({ prompt: "abc", temperature: 0, maxTokens: 4 })
  expect((await late).code).toBe("TIMEOUT")
  expect((await cancelled).code).toBe("CANCELLED")
  expect((await ok).tokens).toBeGreaterThanOrEqual(0)
  expect(e.stats.timeouts).toBe(2)
  expect(e.stats.rows).toBe(1) // only the live request was decoded
})

it("batches only rows that keep their own token budget, and answers them like one by one", async () => {
  const e = new Engine(model, tok, "m", { windowMs: 20, maxBatch: 8 })
  const one = async (prompt: string, maxTokens: number) => (await e.generate({ prompt, temperature: 0, maxTokens })).text
  const alone = [await one("a", 5), await one("ab", 5), await one("abcdefghij", 3)]
  const before = e.stats.batches
  // context 16: "a" and "ab" fit together (≤ 4 prompt tokens + 5 new); padded to the long prompt (12 tokens) they would lose their 5th token
  const together = await Promise.all([one("a", 5), one("ab", 5), one("abcdefghij", 3)])
  expect(together).toEqual(alone)
  expect(e.stats.batches - before).toBe(2)
  expect(e.stats.batchSizes["2"]).toBe(1)
})

it("groups rows by adapter and leaves the hook as it found it", async () => {
  const a = Adapter.create(model, { r: 2, alpha: 4, targetModules: ["all"], seed: 1 }, { name: "m" })
  for (const l of a.layers.values()) l.B.assign(l.B.add(0.2))
  a.save(path.join(work, "src-a"))
  a.dispose()
  let engine: Engine | undefined
  const store = new AdapterStore(model, baseFingerprint(model), path.join(work, "art"), 1, (x) => engine?.forget(x))
  engine = new Engine(model, tok, "m", { windowMs: 20, maxBatch: 8 }, store)
  store.load({ name: "a", path: path.join(work, "src-a") })
  const base = (await engine.generate({ prompt: "ab", temperature: 0, maxTokens: 4 })).text
  const withA = (await engine.generate({ prompt: "ab", temperature: 0, maxTokens: 4, adapter: "a" })).text
  const before = engine.stats.batches
  const mixed = await Promise.all([
    engine.generate({ prompt: "ab", temperature: 0, maxTokens: 4 }),
    engine.generate({ prompt: "ab", temperature: 0, maxTokens: 4, adapter: "a" }),
    engine.generate({ prompt: "ab", temperature: 0, maxTokens: 4 }),
  ])
  expect(mixed.map((r) => r.text)).toEqual([base, withA, base])
  expect(mixed[1].adapter).toBe("a@ext")
  expect(engine.stats.batches - before).toBe(2) // base rows together, the adapter row apart
  // a "training" adapter installed by someone else stays installed across serving work
  const t = Adapter.create(model, { r: 2, alpha: 4, seed: 2 }, { name: "m" })
  engine.activate(t)
  await engine.generate({ prompt: "ab", temperature: 0, maxTokens: 2, adapter: "a" })
  await engine.score({ prompt: "ab", completions: ["c"] })
  expect((engine as unknown as { active: unknown }).active).toBe(t)
  engine.forget(t)
  t.dispose()
  store.dispose()
})
