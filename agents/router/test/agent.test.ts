// The router agent as a real process: `moa router train` (trainRouter) stores a gate in the
// cluster, the running agent hot-reloads it and answers over NATS.
import { afterAll, beforeAll, expect, it } from "vitest"
import { spawn, type ChildProcess } from "node:child_process"
import { fileURLToPath } from "node:url"
import { dirname, resolve } from "node:path"
import { connect } from "@nats-io/transport-node"
import type { NatsConnection } from "@nats-io/nats-core"
import { startNatsServer, type NatsServerHandle } from "@moa/bus/testing"
import { SKILLS } from "@moa/skills"
import { askRouter, trainRouter } from "@moa/router"
import { startRuleExpert, type ExpertProcess } from "../../../packages/router/test/fixtures/cluster.ts"

const here = dirname(fileURLToPath(import.meta.url))
const CLUSTER = "agent"
let nats: NatsServerHandle
let nc: NatsConnection
let agent: ChildProcess
let agentLog = ""
const procs: ExpertProcess[] = []

beforeAll(async () => {
  nats = await startNatsServer({ jetstream: true })
  procs.push(
    await startRuleExpert([
      ...SKILLS.map((s) => ({ nats: nats.url, cluster: CLUSTER, name: s, skills: [s], errorRate: 0.02 })),
      { nats: nats.url, cluster: CLUSTER, name: "base", skills: "all" as const, errorRate: 0.5 },
    ]),
  )
  nc = await connect({ servers: nats.url })
  agent = spawn(process.execPath, ["--import", "tsx", resolve(here, "../src/main.ts"), "--nats", nats.url, "--cluster", CLUSTER], { stdio: ["pipe", "pipe", "pipe"] })
  agent.stderr!.on("data", (d) => (agentLog += d))
  await new Promise<void>((ok, fail) => {
    const t = setTimeout(() => fail(new Error(`router agent did not start: ${agentLog}`)), 120_000)
    agent.stdout!.on("data", (d) => {
      agentLog += d
      if (agentLog.includes("ready")) {
        clearTimeout(t)
        ok()
      }
    })
  })
}, 240_000)

afterAll(async () => {
  if (agent && agent.exitCode === null) {
    const exited = new Promise((r) => agent.once("exit", r))
    agent.kill("SIGTERM")
    await exited
  }
  await nc?.drain()
  await Promise.all(procs.map((p) => p.stop()))
  await nats?.stop()
})

it("refuses to start without a cluster, saying what to pass", async () => {
  const p = spawn(process.execPath, ["--import", "tsx", resolve(here, "../src/main.ts"), "--nats", "nats://127.0.0.1:1"], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, MOA_CLUSTER: "" } })
  let err = ""
  p.stderr!.on("data", (d) => (err += d))
  const code = await new Promise((r) => p.once("exit", r))
  expect(code).toBe(2)
  expect(err).toMatch(/--cluster/)
})

it("answers in single mode before any gate exists, then trains, stores and hot-reloads a gate", async () => {
  const before = await askRouter(nc, CLUSTER, { prompt: "sort dcba", expert: "sort" })
  expect(before.answer).toBe("abcd")
  expect(before.trace.mode).toBe("single")
  const lines: string[] = []
  const r = await trainRouter(nc, { cluster: CLUSTER, nTrain: 30, nHeldOut: 30, version: "a1", log: (l) => lines.push(l) })
  expect(r.report.top1).toBeGreaterThanOrEqual(0.99)
  expect(r.expertAccuracy.add.add).toBeGreaterThan(0.9)
  expect(lines.join("\n")).toMatch(/stored gate a1/)
  // the agent process picks the new version up from KV without a restart; the default mode becomes moe
  const t0 = Date.now()
  const ask = () => askRouter(nc, CLUSTER, { prompt: "count a in banana" }).catch(() => undefined) // 400 until a gate is loaded
  let res = await ask()
  while (res?.trace.gate?.version !== "a1" && Date.now() - t0 < 15_000) {
    await new Promise((ok) => setTimeout(ok, 100))
    res = await ask()
  }
  if (!res) throw new Error(`the agent never answered in moe mode: ${agentLog}`)
  expect(res.trace.mode).toBe("moe")
  expect(res.trace.gate!.version).toBe("a1")
  expect(res.trace.gate!.chosen).toEqual(["count"])
  expect(res.answer).toBe("3")
  expect(agentLog).toMatch(/gate a1 loaded/)
})
