// The runnable expert program: refuses bad arguments with the usage line, and serves a checkpoint
// over a real nats-server when started with --model.
import { afterAll, beforeAll, expect, it } from "vitest"
import { spawn, type ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { connect } from "@nats-io/transport-node"
import type { NatsConnection } from "@nats-io/nats-core"
import { startNatsServer, type NatsServerHandle } from "@moa/bus/testing"
import { makeClient } from "@moa/runtime"
import { buildTinyCheckpoint } from "@moa/expert"

const here = path.dirname(fileURLToPath(import.meta.url))
const main = path.resolve(here, "../src/main.ts")
let nats: NatsServerHandle
let nc: NatsConnection
let work: string
let proc: ChildProcess | undefined

const run = (args: string[]) => spawn(process.execPath, ["--import", "tsx", main, ...args], { stdio: ["ignore", "pipe", "pipe", "ipc"], env: { ...process.env, MOA_BACKEND: "wasm", MOA_LOG_LEVEL: "warn" } })

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), "moa-expert-main-"))
  const [n] = await Promise.all([startNatsServer({ jetstream: false }), buildTinyCheckpoint(path.join(work, "model"), { backend: "wasm", steps: 20 })])
  nats = n
  nc = await connect({ servers: nats.url })
}, 120_000)

afterAll(async () => {
  if (proc && proc.exitCode === null) {
    const exited = new Promise((r) => proc!.once("exit", r))
    proc.kill("SIGTERM")
    await exited
  }
  await nc?.drain()
  await nats?.stop()
  if (work) fs.rmSync(work, { recursive: true, force: true })
})

it("refuses to start without --model, saying what to pass", async () => {
  const p = run(["--nats", nats.url])
  let err = ""
  p.stderr!.on("data", (d) => (err += d))
  const code = await new Promise((r) => p.once("exit", r))
  expect(code).toBe(2)
  expect(err).toMatch(/--model <checkpoint-dir> is required/)
})

it("serves generate and model-info for the checkpoint it is given", async () => {
  proc = run(["--model", path.join(work, "model"), "--name", "solo", "--cluster", "maintest", "--nats", nats.url, "--artifacts", path.join(work, "art"), "--no-batching"])
  let log = ""
  proc.stderr!.on("data", (d) => (log += d))
  await new Promise<void>((ok, fail) => {
    const t = setTimeout(() => fail(new Error(`did not start: ${log}`)), 60_000)
    proc!.on("message", (m: { type?: string }) => m?.type === "ready" && (clearTimeout(t), ok()))
    proc!.once("exit", (c) => fail(new Error(`exited ${c}: ${log}`)))
  })
  const client = makeClient(nc, "maintest")
  const r = await client.call("solo", "generate", { prompt: "rev ab", temperature: 0, maxTokens: 4 })
  expect(r.model).toBe("tiny-rev")
  expect(r.tokens).toBeLessThanOrEqual(4)
  const info = await client.call<{ batching: { maxBatch: number }; backend: { name: string } }>("solo", "model-info", {})
  expect(info.batching.maxBatch).toBe(1)
  expect(info.backend.name).toBe("wasm")
})
