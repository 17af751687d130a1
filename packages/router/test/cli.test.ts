// `moa router train|gate|ask` as real subprocesses against a live cluster.
import { afterAll, beforeAll, expect, it } from "vitest"
import { execFile } from "node:child_process"
import { promisify } from "node:util"
import { mkdtempSync, existsSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve, dirname } from "node:path"
import { fileURLToPath } from "node:url"
import { startNatsServer, type NatsServerHandle } from "@moa/bus/testing"
import { SKILLS } from "@moa/skills"
import { startRouterAgent, type RouterAgent } from "../src/index.ts"
import { startRuleExpert, type ExpertProcess } from "./fixtures/cluster.ts"

const run = promisify(execFile)
const root = resolve(dirname(fileURLToPath(import.meta.url)), "../../..")
const moa = (...args: string[]) => run(process.execPath, [join(root, "packages/cli/bin/moa.js"), ...args], { cwd: root, env: { ...process.env, MOA_NATS_URL: "" }, timeout: 180_000 })
const CLUSTER = "clitest"
let nats: NatsServerHandle
let experts: ExpertProcess
let agent: RouterAgent

beforeAll(async () => {
  nats = await startNatsServer({ jetstream: true })
  experts = await startRuleExpert([
    ...SKILLS.map((s) => ({ nats: nats.url, cluster: CLUSTER, name: s, skills: [s], errorRate: 0.02 })),
    { nats: nats.url, cluster: CLUSTER, name: "base", skills: "all" as const, errorRate: 0.5 },
  ])
  agent = await startRouterAgent({ nats: nats.url, cluster: CLUSTER })
}, 240_000)

afterAll(async () => {
  await agent?.stop()
  await experts?.stop()
  await nats?.stop()
})

it("moa router train stores a gate (and writes its files); moa router ask answers through the agent", async () => {
  const out = mkdtempSync(join(tmpdir(), "moa-gate-"))
  const t = await moa("router", "train", "--nats", nats.url, "--cluster", CLUSTER, "--n-train", "20", "--n-held-out", "20", "--version", "c1", "--out", out, "--json")
  const report = JSON.parse(t.stdout)
  expect(report.version).toBe("c1")
  expect(report.report.top1).toBeGreaterThanOrEqual(0.99)
  expect(existsSync(join(out, "gate.safetensors"))).toBe(true)
  expect(JSON.parse(readFileSync(join(out, "gate.json"), "utf8")).experts).toContain("add")
  // the in-process agent reloads c1; then ask through the CLI
  const t0 = Date.now()
  while (agent.router.gate?.version !== "c1" && Date.now() - t0 < 15_000) await new Promise((r) => setTimeout(r, 100))
  // the gate weighs experts by health: one that missed a $SRV.STATS poll on a busy machine gets
  // no share, and the question goes elsewhere (a CI run answered "?" so) — wait until sort is seen
  while (!agent.router.load().sort?.healthy && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 100))
  const a = await moa("router", "ask", "sort dcba", "--nats", nats.url, "--cluster", CLUSTER, "--json")
  const res = JSON.parse(a.stdout)
  expect(res.answer, JSON.stringify(res.trace)).toBe("abcd")
  expect(res.trace.gate.version).toBe("c1")
  expect(res.trace.gate.chosen).toEqual(["sort"])
}, 300_000)
