// Shared set-up of the coordinator tests: a real nats-server, a weak tiny expert trained here,
// and expert agents started as real processes (agents/expert's moa-expert).
import { spawn, type ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { connect } from "@nats-io/transport-node"
import type { NatsConnection } from "@nats-io/nats-core"
import { startNatsServer, type NatsServerHandle } from "@moa/bus/testing"
import { makeClient, type AgentClient } from "@moa/runtime"
import { createExpert, type ExpertState } from "@moa/expert"
import { buildWeakExpert } from "../src/fixture.ts"
import { skillTasks } from "../src/index.ts"

const here = path.dirname(fileURLToPath(import.meta.url))
export const root = path.resolve(here, "../../..")

/** The weak sort expert: d32, 1 layer, a few steps on CI-size sort (cached per machine: same options, same model). */
export const WEAK = { skill: "sort" as const, steps: 90, seed: 3, config: { dModel: 32, nLayers: 1, nHeads: 2 } }
export async function weakModel(): Promise<string> {
  const dir = path.join(os.tmpdir(), `moa-coordinator-weak-sort-${WEAK.steps}-${WEAK.seed}-d32l1`)
  const lock = `${dir}.building`
  // two test files may start together: the first builds, the other waits for it
  while (fs.existsSync(lock) && !fs.existsSync(path.join(dir, "model.safetensors"))) await new Promise((r) => setTimeout(r, 500))
  if (!fs.existsSync(path.join(dir, "model.safetensors"))) {
    const tmp = `${dir}.tmp${process.pid}`
    fs.writeFileSync(lock, String(process.pid))
    try {
      await buildWeakExpert(tmp, { ...WEAK, backend: "wasm" })
      fs.renameSync(tmp, dir)
    } finally {
      fs.rmSync(lock, { force: true })
    }
  }
  return dir
}

export interface ExpertProc {
  readonly proc: ChildProcess
  log: string
  stop(): Promise<void>
}

/** Start `moa-expert` as a real process and wait until it serves. */
export async function startExpert(o: { model: string; name: string; cluster: string; nats: string; artifacts: string }): Promise<ExpertProc> {
  const proc = spawn(
    process.execPath,
    ["--import", "tsx", path.join(root, "agents/expert/src/main.ts"), "--model", o.model, "--name", o.name, "--cluster", o.cluster, "--nats", o.nats, "--artifacts", o.artifacts, "--backend", "wasm"],
    { cwd: root, stdio: ["ignore", "pipe", "pipe", "ipc"], env: { ...process.env, MOA_BACKEND: "wasm", MOA_LOG_LEVEL: "warn" } },
  )
  const h: ExpertProc = {
    proc,
    log: "",
    stop: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return
      const done = new Promise((r) => proc.once("exit", r))
      proc.kill("SIGKILL")
      await done
    },
  }
  proc.stdout!.on("data", (d) => (h.log += d))
  proc.stderr!.on("data", (d) => (h.log += d))
  await new Promise<void>((ok, fail) => {
    const t = setTimeout(() => fail(new Error(`expert ${o.name} did not start:\n${h.log}`)), 120_000)
    proc.on("message", (m: { type?: string }) => {
      if (m?.type === "ready") {
        clearTimeout(t)
        ok()
      }
    })
    proc.once("exit", (code) => fail(new Error(`expert ${o.name} exited with ${code}:\n${h.log}`)))
  })
  return h
}

/**
 * What every coordinator test file sets up: a work folder, a nats-server with JetStream, the weak
 * model, a connection and an agent client; `expert(name)` starts an expert process (artifacts in
 * `work/<name>` unless given) and `close()` stops them all, the server, and removes the folder.
 */
export interface Harness {
  readonly work: string
  readonly nats: NatsServerHandle
  readonly model: string
  readonly nc: NatsConnection
  readonly client: AgentClient
  expert(name: string, artifacts?: string): Promise<ExpertProc>
  close(): Promise<void>
}

export async function openHarness(prefix: string, cluster: string): Promise<Harness> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), `moa-coord-${prefix}-`))
  const [nats, model] = await Promise.all([startNatsServer({ jetstream: true }), weakModel()])
  const nc = await connect({ servers: nats.url })
  const procs: ExpertProc[] = []
  return {
    work,
    nats,
    model,
    nc,
    client: makeClient(nc, cluster),
    expert: async (name, artifacts = path.join(work, name)) => {
      const p = await startExpert({ model, name, cluster, nats: nats.url, artifacts })
      procs.push(p)
      return p
    },
    close: async () => {
      await nc.close().catch(() => undefined)
      for (const p of procs) await p.stop()
      await nats.stop()
      fs.rmSync(work, { recursive: true, force: true })
    },
  }
}

/**
 * The weak sort expert in this process (the expert's Trainer and Engine, no NATS), for tests of a
 * job's numerics; `accuracy(adapter?)` is its greedy exact-match accuracy on every held-out CI
 * sort question.
 */
export async function inProcessSortExpert(prefix: string): Promise<{ ex: ExpertState; accuracy: (adapter?: string) => Promise<number>; close: () => void }> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), `moa-${prefix}-`))
  const ex = await createExpert({ name: "sort", model: await weakModel(), artifacts: work, backend: "wasm" })
  const spec = skillTasks("sort")
  const test = spec.tasks("test", 200, 1000)
  return {
    ex,
    accuracy: async (adapter) => {
      const outs = await Promise.all(test.map((t) => ex.engine.generate({ prompt: t.prompt, temperature: 0, maxTokens: 12, ...(adapter ? { adapter } : {}) })))
      return outs.filter((o, i) => spec.verify(test[i]!, o.text) === 1).length / test.length
    },
    close: () => {
      ex.engine.close()
      fs.rmSync(work, { recursive: true, force: true })
    },
  }
}
