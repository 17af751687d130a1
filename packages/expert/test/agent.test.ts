// The expert agent as a real process (the runtime's agent-main) on a real nats-server, serving a
// tiny model this file trains in its setup: generate (streamed and not), score, micro-batching,
// adapters loaded/swapped/unloaded/evicted while serving, training jobs, and typed errors.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { spawn, type ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Schema } from "effect"
import { connect } from "@nats-io/transport-node"
import type { NatsConnection } from "@nats-io/nats-core"
import { startNatsServer, type NatsServerHandle } from "@moa/bus/testing"
import { makeClient, type AgentClient } from "@moa/runtime"
import { encodePrompt, generate, initBackend, loadCheckpoint, type GPT, type Tokenizer } from "@moa/model"
import type { GenerateChunk, MoaError } from "@moa/protocol"
import { buildTinyCheckpoint, type ModelInfo, type TrainResponse } from "../src/index.ts"

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, "../../..")
const CLUSTER = "experttest"
const AGENT = "tiny"
const PROMPTS = ["rev abc", "rev hgfe", "rev ab", "rev dcbah", "rev gg", "rev fade", "rev cab", "rev bead"]

let nats: NatsServerHandle
let nc: NatsConnection
let client: AgentClient
let agent: ChildProcess
let agentLog = ""
let work: string
let local: { model: GPT; tokenizer: Tokenizer }

const data = (completion: string) => PROMPTS.map((prompt) => ({ prompt, completion }))
const modelInfo = () => client.call<ModelInfo>(AGENT, "model-info", {})
const greedy = (prompt: string, adapter?: string) =>
  client.call(AGENT, "generate", { prompt, temperature: 0, maxTokens: 8, ...(adapter ? { adapter } : {}) }).then((r) => r.text)
const train = (req: Record<string, unknown>) => client.call<TrainResponse>(AGENT, "train", req, { timeoutMs: 120_000 })
const failure = async (p: Promise<unknown>): Promise<MoaError> => {
  try {
    await p
  } catch (e) {
    return e as MoaError
  }
  throw new Error("expected the call to fail")
}

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), "moa-expert-"))
  const modelDir = path.join(work, "model")
  const [n] = await Promise.all([startNatsServer({ jetstream: false }), buildTinyCheckpoint(modelDir, { backend: "wasm" })])
  nats = n
  await initBackend("wasm")
  local = loadCheckpoint(modelDir)
  agent = spawn(
    process.execPath,
    ["--import", "tsx", path.join(root, "packages/runtime/src/agent-main.ts"), "--cluster", path.join(here, "fixtures/cluster.ts"), "--agent", AGENT, "--nats", nats.url],
    {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe", "ipc"],
      env: { ...process.env, MOA_BACKEND: "wasm", MOA_EXPERT_MODEL: modelDir, MOA_EXPERT_ARTIFACTS: path.join(work, "artifacts"), MOA_LOG_LEVEL: "warn" },
    },
  )
  agent.stdout!.on("data", (d) => (agentLog += d))
  agent.stderr!.on("data", (d) => (agentLog += d))
  await new Promise<void>((ok, fail) => {
    const t = setTimeout(() => fail(new Error(`expert agent did not start:\n${agentLog}`)), 60_000)
    agent.on("message", (m: { type?: string }) => {
      if (m?.type === "ready") {
        clearTimeout(t)
        ok()
      }
    })
    agent.once("exit", (code) => fail(new Error(`expert agent exited with ${code}:\n${agentLog}`)))
  })
  nc = await connect({ servers: nats.url })
  client = makeClient(nc, CLUSTER)
}, 120_000)

afterAll(async () => {
  if (agent && agent.exitCode === null) {
    const exited = new Promise((r) => agent.once("exit", r))
    agent.kill("SIGTERM")
    await exited
  }
  await nc?.drain()
  await nats?.stop()
  local?.model.dispose()
  if (work) fs.rmSync(work, { recursive: true, force: true })
})

describe("serving", () => {
  it("reports the model and backend in info and model-info", async () => {
    const info = await client.call(AGENT, "info", {})
    expect(info.backend).toBe("wasm")
    expect(info.metadata?.model).toBe("tiny-rev")
    expect(info.verbs).toEqual(expect.arrayContaining(["generate", "score", "train", "model-info", "adapters-load", "adapters-unload", "adapters-list"]))
    const mi = await modelInfo()
    expect(mi.params).toBe(local.model.numParams())
    expect(mi.config).toMatchObject({ dModel: local.model.config.dModel, contextLength: local.model.config.contextLength })
    expect(mi.backend.name).toBe("wasm")
    expect(mi.versions.tfjs).toBe("4.22.0")
  })

  it("answers generate like the local model, and streams the same text in chunks", async () => {
    const expected = generate(local.model, local.tokenizer, ["rev abc"], { temperature: 0, maxTokens: 8 })[0]
    const r = await client.call(AGENT, "generate", { prompt: "rev abc", temperature: 0, maxTokens: 8, logprobs: true })
    expect(r.text).toBe(expected.text)
    expect(r.tokens).toBe(expected.tokens.length)
    expect(r.logprobs).toHaveLength(r.tokens)
    expect(r.usage?.promptTokens).toBe(encodePrompt(local.tokenizer, "rev abc").length)
    const chunks: GenerateChunk[] = []
    for await (const c of client.stream(AGENT, "generate", { prompt: "rev abc", temperature: 0, maxTokens: 8, stream: true })) chunks.push(c)
    expect(chunks.at(-1)?.done).toBe(true)
    expect(chunks.map((c) => c.text).join("")).toBe(r.text)
    // sampling with a seed is reproducible; a max-token bound is honoured
    const a = await client.call(AGENT, "generate", { prompt: "rev abc", temperature: 1.5, seed: 3, maxTokens: 5 })
    const b = await client.call(AGENT, "generate", { prompt: "rev abc", temperature: 1.5, seed: 3, maxTokens: 5 })
    expect(a.text).toBe(b.text)
    expect(a.tokens).toBeLessThanOrEqual(5)
  })

  it("cuts the answer at a stop sequence", async () => {
    const full = await client.call(AGENT, "generate", { prompt: "rev abc", temperature: 1, seed: 1, maxTokens: 12 })
    if (full.text.length < 2) return // nothing to cut: the model ended at once
    const stop = full.text.slice(1, 2)
    const cut = await client.call(AGENT, "generate", { prompt: "rev abc", temperature: 1, seed: 1, maxTokens: 12, stop: [stop] })
    expect(cut.text).toBe(full.text.slice(0, full.text.indexOf(stop)))
    expect(cut.finishReason).toBe("stop")
  })

  it("scores completions with the same log-probs as the local model", async () => {
    const completions = ["cba", "abc", "zz"]
    const r = await client.call(AGENT, "score", { prompt: "rev abc", completions, perToken: true })
    const tok = local.tokenizer
    const expected = local.model.logProbs(
      completions.map(() => encodePrompt(tok, "rev abc")),
      completions.map((c) => [...tok.encode(c), tok.eos]),
    )
    r.logprobs.forEach((lp, i) => expect(lp).toBeCloseTo(expected[i], 4))
    expect(r.tokens).toEqual([4, 4, 3])
    expect(r.perToken?.[0]).toHaveLength(4)
  })

  it("batches concurrent requests into one decoding loop with the same greedy answers as one by one", async () => {
    const oneByOne: string[] = []
    for (const p of PROMPTS) oneByOne.push(await greedy(p))
    const before = (await modelInfo()).stats
    const together = await Promise.all(PROMPTS.map((p) => greedy(p)))
    const after = (await modelInfo()).stats
    expect(together).toEqual(oneByOne)
    expect(oneByOne).toEqual(PROMPTS.map((p) => generate(local.model, local.tokenizer, [p], { temperature: 0, maxTokens: 8 })[0].text))
    expect(after.rows - before.rows).toBe(PROMPTS.length)
    expect(after.batches - before.batches).toBeLessThan(PROMPTS.length) // some shared a batch
    expect(after.maxBatchSize).toBeGreaterThan(1)
  })
})

describe("adapters and training", () => {
  const lora = { r: 4, alpha: 8, targetModules: ["all"] }
  let base: string[]

  it("trains a new adapter with sft that changes the answers, and keeps serving during the job", async () => {
    base = await Promise.all(PROMPTS.map((p) => greedy(p)))
    let trainDone = false
    const job = train({ adapter: "zz", algorithm: "sft", data: data("zz"), lora, hyper: { steps: 60, lr: 0.03, batchSize: 8 }, jobId: "j1" }).then((r) => {
      trainDone = true
      return r
    })
    await new Promise((r) => setTimeout(r, 300))
    const during = await greedy("rev abc") // answered between training steps
    const answeredDuringTraining = !trainDone
    const r = await job
    expect(answeredDuringTraining).toBe(true)
    expect(during).toBe(base[0])
    expect(r).toMatchObject({ adapter: "zz", version: "v1", baseVersion: "new", algorithm: "sft", steps: 60, jobId: "j1", promoted: true })
    expect(r.losses).toHaveLength(60)
    expect(r.losses.at(-1)!).toBeLessThan(r.losses[0] / 2)
    expect(fs.existsSync(path.join(r.dir, "adapter_config.json")) && fs.existsSync(path.join(r.dir, "adapter_model.safetensors"))).toBe(true)
    const tuned = await Promise.all(PROMPTS.map((p) => greedy(p, "zz")))
    expect(tuned.filter((t) => t === "zz").length).toBeGreaterThanOrEqual(4) // mostly learned
    expect(tuned).not.toEqual(base)
    // the base model is untouched
    expect(await Promise.all(PROMPTS.map((p) => greedy(p)))).toEqual(base)
  })

  it("trains version v2 from v1 (dpo), serves both by name@version, and swaps the current version", async () => {
    const r = await train({
      adapter: "zz",
      algorithm: "dpo",
      baseVersion: "v1",
      data: PROMPTS.map((prompt) => ({ prompt, chosen: "ab", rejected: "zz" })),
      hyper: { maxSteps: 25, learningRate: 0.02, batchSize: 8, beta: 0.5 },
    })
    expect(r).toMatchObject({ version: "v2", baseVersion: "v1", promoted: false })
    expect(r.losses.at(-1)!).toBeLessThan(r.losses[0])
    const v1 = await Promise.all(PROMPTS.map((p) => greedy(p, "zz@v1")))
    const v2 = await Promise.all(PROMPTS.map((p) => greedy(p, "zz@v2")))
    expect(v2).not.toEqual(v1)
    expect(await greedy("rev abc", "zz")).toBe(v1[0]) // not promoted: current is still v1
    const swapped = await client.call<{ current: string }>(AGENT, "adapters-load", { name: "zz", version: "v2" })
    expect(swapped.current).toBe("v2")
    expect(await greedy("rev abc", "zz")).toBe(v2[0])
  })

  it("loads adapters from folders while serving, evicts the least recently used beyond the bound, and unloads", async () => {
    const dir = path.join(work, "artifacts", "adapters", "zz", "v1")
    const v1Answer = await greedy("rev abc", "zz@v1")
    await client.call(AGENT, "adapters-load", { name: "copy1", path: dir })
    await client.call(AGENT, "adapters-load", { name: "copy2", path: dir })
    expect(await greedy("rev abc", "copy1")).toBe(v1Answer)
    expect(await greedy("rev abc", "copy2")).toBe(v1Answer)
    const list = await client.call<{ inMemory: string[]; maxLoaded: number; evictions: number; adapters: { name: string }[] }>(AGENT, "adapters-list", {})
    expect(list.maxLoaded).toBe(2)
    expect(list.inMemory).toEqual(["copy1@ext", "copy2@ext"]) // least recently used first
    expect(list.evictions).toBeGreaterThan(0)
    expect(list.adapters.map((a) => a.name)).toEqual(["copy1", "copy2", "zz"])
    // an evicted adapter is loaded back on demand and answers the same
    expect(await greedy("rev abc", "zz@v1")).toBe(v1Answer)
    const again = await client.call<{ inMemory: string[] }>(AGENT, "adapters-list", {})
    expect(again.inMemory).toEqual(["copy2@ext", "zz@v1"])
    const un = await client.call<{ unloaded: string[] }>(AGENT, "adapters-unload", { name: "copy2" })
    expect(un.unloaded).toEqual(["copy2@ext"])
    const e = await failure(greedy("rev abc", "copy2"))
    expect(e.code).toBe("NOT_FOUND")
    expect(e.message).toMatch(/unknown adapter "copy2"/)
  })

  it("trains kto and grpo jobs into new versions", async () => {
    const k = await train({
      adapter: "zz",
      algorithm: "kto",
      data: [
        { prompt: "rev abc", completion: "cba", label: true },
        { prompt: "rev ab", completion: "zz", label: false },
        { prompt: "rev gg", completion: "gg", label: true },
      ],
      hyper: { maxSteps: 3, batchSize: 3 },
    })
    expect(k.version).toBe("v3")
    expect(k.baseVersion).toBe("v2")
    const g = await train({
      adapter: "zz",
      algorithm: "grpo",
      data: [
        { prompt: "rev abc", completions: ["cba", "zz", "ab"], rewards: [1, 0, 0] },
        { prompt: "rev ab", completions: ["ba", "zz", "a"], rewards: [1, 0, 0.5] },
      ],
      hyper: { maxSteps: 3, beta: 0.05, learningRate: 0.01 },
    })
    expect(g.version).toBe("v4")
    expect(g.metrics.reward).toBeCloseTo((1 / 3 + 1.5 / 3) / 2, 4)
    expect(g.losses).toHaveLength(3)
  })
})

describe("bad requests get typed errors and the agent keeps serving", () => {
  it("refuses each with a clear reason", async () => {
    const cases: [() => Promise<unknown>, string, RegExp, string?][] = [
      [() => greedy("rev abc", "nope"), "NOT_FOUND", /unknown adapter "nope"/, "adapter"],
      [() => client.call(AGENT, "score", { prompt: "rev abc", completions: ["x"], adapter: "nope" }), "NOT_FOUND", /unknown adapter/],
      [() => greedy("rev abc", "zz@v99"), "NOT_FOUND", /no version "v99"/],
      [() => client.call(AGENT, "generate", { prompt: "rev " + "a".repeat(40) }), "BAD_REQUEST", /context/, "prompt"],
      [() => client.call(AGENT, "generate", { prompt: "x", maxTokens: -1 } as never, { request: Schema.Unknown }) /* past the client's own check */, "BAD_REQUEST", /maxTokens/],
      [() => train({ adapter: "zz", algorithm: "ppo-ish", data: data("a") }), "BAD_REQUEST", /unknown algorithm/, "algorithm"],
      [() => train({ adapter: "zz", algorithm: "sft", data: [] }), "BAD_REQUEST", /data is empty/, "data"],
      [() => train({ adapter: "zz", algorithm: "sft", baseVersion: "v77", data: data("a") }), "NOT_FOUND", /no version "v77"/, "baseVersion"],
      [() => train({ adapter: "fresh", algorithm: "sft", baseVersion: "v1", data: data("a") }), "NOT_FOUND", /unknown adapter "fresh"/],
      [() => train({ adapter: "zz", algorithm: "sft", data: [{ prompt: "x" }] }), "BAD_REQUEST", /data\[0\]/, "data.0"],
      [() => train({ adapter: "zz", algorithm: "dpo", data: [{ prompt: "x", chosen: "a", rejected: "b" }], hyper: { beta: -1 } }), "BAD_REQUEST", /beta/],
      [() => train({ adapter: "zz", algorithm: "sft", data: data("a"), hyper: { stepz: 3 } }), "BAD_REQUEST", /unknown sft hyper-parameter "stepz"/],
      [() => train({ adapter: "../up", algorithm: "sft", data: data("a") }), "BAD_REQUEST", /must be 1–64 letters/, "adapter"],
      [() => client.call(AGENT, "adapters-load", { name: "bad", path: path.join(work, "artifacts", "no-such-folder") }), "BAD_REQUEST", /does not exist/, "path"],
      [() => client.call(AGENT, "adapters-load", { name: "bad", path: path.join(work, "artifacts", "adapters") }), "BAD_REQUEST", /not an adapter folder/, "path"],
      // a path in a message never reaches outside the expert's artifacts folder
      [() => client.call(AGENT, "adapters-load", { name: "bad", path: path.join(work, "model") }), "BAD_REQUEST", /refused/, "path"],
      [() => client.call(AGENT, "adapters-load", { name: "bad", path: "../../etc" }), "BAD_REQUEST", /refused/, "path"],
      [() => client.call(AGENT, "adapters-unload", { name: "ghost" }), "NOT_FOUND", /unknown adapter "ghost"/],
    ]
    for (const [call, code, message, field] of cases) {
      const e = await failure(Promise.resolve().then(call))
      expect(e.code, e.message).toBe(code)
      expect(e.message).toMatch(message)
      if (field) expect(e.field).toBe(field)
    }
    expect(await greedy("rev abc")).toBe(base0())
    expect(agent.exitCode).toBeNull()
  })
})

const base0 = () => generate(local.model, local.tokenizer, ["rev abc"], { temperature: 0, maxTokens: 8 })[0].text
