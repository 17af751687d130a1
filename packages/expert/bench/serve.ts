// `npm run bench:expert`: answers per second of a model-backed expert agent over NATS with 1 and
// 16 concurrent clients, micro-batching on and off, in the same run.
//
//   npm run bench:expert [-- --seconds 8] [-- --max-tokens 16] [-- --model d128] [-- --backend wasm]
//   (--model d64 | d128 | d256; --backend sets MOA_BACKEND for the experts, default: the model's order)
//
// Starts a nats-server and two expert processes on the same checkpoint (one batching with the
// default 4 ms window and up to 16 rows, one with batching off), then for each client count runs
// closed-loop clients (each sends a greedy generate, waits for the answer, sends the next) for
// a fixed time. The checkpoint is a GPT with random weights (speed does not depend on what the
// weights learned); greedy answers are cut at --max-tokens so every answer costs the same.
// A last cell spreads the 16 clients over 4 LoRA adapters: batches group rows by adapter, so it
// shows what mixing adapters costs.
// Writes packages/expert/bench/results/serve-<backend>.json and prints a markdown table.
import { spawn, type ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { connect } from "@nats-io/transport-node"
import { startNatsServer } from "@moa/bus/testing"
import { makeClient } from "@moa/runtime"
import { CharTokenizer, GPT, initBackend, makeConfig, saveCheckpoint } from "@moa/model"
import { Adapter } from "@moa/tune"
import { TINY_ALPHABET, toyExamples, type ModelInfo } from "../src/index.ts"

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, "../../..")
const args = process.argv.slice(2)
const arg = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 ? args[i + 1] : dflt
}
const seconds = Number(arg("seconds", "8"))
const maxTokens = Number(arg("max-tokens", "16"))
const size = arg("model", "d128")
const SIZES: Record<string, { dModel: number; nLayers: number; nHeads: number }> = {
  d64: { dModel: 64, nLayers: 2, nHeads: 4 },
  d128: { dModel: 128, nLayers: 4, nHeads: 4 },
  d256: { dModel: 256, nLayers: 4, nHeads: 8 },
}
if (!SIZES[size]) throw new Error(`--model must be one of ${Object.keys(SIZES).join(", ")}`)
const backendArg = arg("backend", process.env.MOA_BACKEND ?? "")
if (backendArg) process.env.MOA_BACKEND = backendArg
const CLIENTS = [1, 16]
const log = (m: string) => console.error(`[bench:expert] ${m}`)

const work = fs.mkdtempSync(path.join(os.tmpdir(), "moa-bench-expert-"))
const modelDir = path.join(work, "model")
await initBackend()
const tok = new CharTokenizer(TINY_ALPHABET, false)
const model = new GPT(makeConfig({ vocabSize: tok.vocabSize, contextLength: 64, ...SIZES[size] }), { seed: 1 })
saveCheckpoint(modelDir, model, tok, { metadata: { name: `bench-${size}` } })
const params = model.numParams()
// four LoRA adapters (r 8 on q and v) for the mixed-adapter cell
const ADAPTERS = ["a0", "a1", "a2", "a3"]
for (const [i, name] of ADAPTERS.entries()) {
  const a = Adapter.create(model, { r: 8, alpha: 16, targetModules: ["q", "v"], seed: i }, { name: `bench-${size}` })
  for (const l of a.layers.values()) l.B.assign(l.B.add(0.01)) // non-zero: the adapter changes the output
  a.save(path.join(work, "adapters", name))
  a.dispose()
}
model.dispose()

const nats = await startNatsServer({ jetstream: false })
const procs: ChildProcess[] = []
const startAgent = (agent: string) =>
  new Promise<void>((ok, fail) => {
    const p = spawn(
      process.execPath,
      ["--import", "tsx", path.join(root, "packages/runtime/src/agent-main.ts"), "--cluster", path.join(here, "cluster.ts"), "--agent", agent, "--nats", nats.url],
      { cwd: root, stdio: ["ignore", "ignore", "pipe", "ipc"], env: { ...process.env, MOA_BENCH_MODEL: modelDir, MOA_BENCH_ARTIFACTS: path.join(work, "art"), MOA_LOG_LEVEL: "warn" } },
    )
    procs.push(p)
    let err = ""
    p.stderr!.on("data", (d) => (err += d))
    const t = setTimeout(() => fail(new Error(`${agent} did not start: ${err}`)), 120_000)
    p.on("message", (m: { type?: string }) => m?.type === "ready" && (clearTimeout(t), ok()))
    p.once("exit", (c) => fail(new Error(`${agent} exited ${c}: ${err}`)))
  })

const cleanup = async () => {
  for (const p of procs) if (p.exitCode === null) p.kill("SIGTERM")
  await nats.stop()
  fs.rmSync(work, { recursive: true, force: true })
}

try {
  await Promise.all([startAgent("batched"), startAgent("single")])
  const nc = await connect({ servers: nats.url })
  const client = makeClient(nc, "bench")
  const prompts = toyExamples(256, 3).map((e) => e.prompt)
  const info0 = await client.call<ModelInfo>("batched", "model-info", {})
  log(`model ${size} (${params} params), backend ${info0.backend.name}, ${seconds} s per cell, ${maxTokens} tokens per answer`)

  for (const name of ADAPTERS) await client.call("batched", "adapters-load", { name, path: path.join(work, "adapters", name) })
  const rows: { agent: string; batching: string; adapters: string; clients: number; answers: number; seconds: number; answersPerSec: number; tokensPerSec: number; p50Ms: number; meanBatch: number }[] = []
  const cells = [
    ...CLIENTS.map((clients) => ({ agent: "single", clients, adapters: 0 })),
    ...CLIENTS.map((clients) => ({ agent: "batched", clients, adapters: 0 })),
    { agent: "batched", clients: 16, adapters: ADAPTERS.length },
  ]
  for (const agent of ["single", "batched"]) // warm-up: first calls compile kernels and fill caches
    await Promise.all(prompts.slice(0, 4).map((prompt) => client.call(agent, "generate", { prompt, temperature: 0, maxTokens })))
  {
    for (const { agent, clients, adapters } of cells) {
      const before = (await client.call<ModelInfo>(agent, "model-info", {})).stats
      const latencies: number[] = []
      let answers = 0
      let tokens = 0
      const t0 = performance.now()
      const end = t0 + seconds * 1000
      await Promise.all(
        Array.from({ length: clients }, async (_, c) => {
          let i = c
          while (performance.now() < end) {
            const s = performance.now()
            const adapter = adapters > 0 ? { adapter: ADAPTERS[c % adapters] } : {}
            const r = await client.call(agent, "generate", { prompt: prompts[i++ % prompts.length], temperature: 0, maxTokens, ...adapter }, { timeoutMs: 120_000 })
            latencies.push(performance.now() - s)
            answers++
            tokens += r.tokens
          }
        }),
      )
      const elapsed = (performance.now() - t0) / 1000
      const after = (await client.call<ModelInfo>(agent, "model-info", {})).stats
      latencies.sort((a, b) => a - b)
      const row = {
        agent,
        batching: agent === "batched" ? "on (4 ms, ≤16)" : "off",
        adapters: adapters > 0 ? `${adapters} LoRA, one per client group` : "none",
        clients,
        answers,
        seconds: Number(elapsed.toFixed(2)),
        answersPerSec: Number((answers / elapsed).toFixed(2)),
        tokensPerSec: Number((tokens / elapsed).toFixed(1)),
        p50Ms: Math.round(latencies[Math.floor(latencies.length / 2)] ?? 0),
        meanBatch: Number(((after.rows - before.rows) / Math.max(1, after.batches - before.batches)).toFixed(2)),
      }
      rows.push(row)
      log(JSON.stringify(row))
    }
  }
  await nc.drain()
  const result = { at: new Date().toISOString(), host: os.hostname(), cpus: os.cpus().length, loadavg: os.loadavg(), model: size, params, backend: info0.backend, maxTokens, seconds, rows }
  fs.mkdirSync(path.join(here, "results"), { recursive: true })
  fs.writeFileSync(path.join(here, "results", `serve-${info0.backend.name}.json`), JSON.stringify(result, null, 2) + "\n")
  const table = [
    `model ${size} (${params.toLocaleString("en")} params), backend ${info0.backend.name}, greedy answers of ${maxTokens} tokens, ${seconds} s per cell, load average ${os.loadavg()[0].toFixed(1)} on ${os.cpus().length} cores`,
    "",
    "| micro-batching | adapters | clients | answers/s | tokens/s | p50 latency ms | mean batch size |",
    "|---|---|---|---|---|---|---|",
    ...rows.map((r) => `| ${r.batching} | ${r.adapters} | ${r.clients} | ${r.answersPerSec} | ${r.tokensPerSec} | ${r.p50Ms} | ${r.meanBatch} |`),
  ].join("\n")
  console.log(table)
} finally {
  await cleanup()
}
