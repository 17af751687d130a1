// The coordinator as an agent of a cluster (defineCoordinator), started by the runtime's
// agent-main as a real process: `round` starts a run in the background and answers at once,
// a second `round` while it runs is refused, bad requests get clear errors, `round-status`
// follows the run to its summary, and the events land in the round-events stream that
// `moa console`'s /round watch reads.
import { spawn, type ChildProcess } from "node:child_process"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { NatsConnection } from "@nats-io/nats-core"
import type { AgentClient } from "@moa/runtime"
import { Store } from "../src/index.ts"
import { openHarness, root, type Harness } from "./helpers.ts"

const here = path.dirname(fileURLToPath(import.meta.url))
const CLUSTER = "cagent"
let h: Harness
let nc: NatsConnection
let client: AgentClient
let coord: ChildProcess
let coordLog = ""

beforeAll(async () => {
  h = await openHarness("agent", CLUSTER)
  ;({ nc, client } = h)
  await h.expert("sort")
  coord = spawn(process.execPath, ["--import", "tsx", path.join(root, "packages/runtime/src/agent-main.ts"), "--cluster", path.join(here, "fixtures/coordinator-cluster.ts"), "--agent", "coordinator", "--nats", h.nats.url], {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe", "ipc"],
    env: { ...process.env, MOA_LOG_LEVEL: "info" },
  })
  coord.stdout!.on("data", (d) => (coordLog += d))
  coord.stderr!.on("data", (d) => (coordLog += d))
  await new Promise<void>((ok, fail) => {
    const t = setTimeout(() => fail(new Error(`coordinator did not start:\n${coordLog}`)), 120_000)
    coord.on("message", (msg: { type?: string }) => msg?.type === "ready" && (clearTimeout(t), ok()))
    coord.once("exit", (code) => fail(new Error(`coordinator exited with ${code}:\n${coordLog}`)))
  })
}, 400_000)

afterAll(async () => {
  coord?.kill("SIGKILL")
  await h?.close()
})

type Status = { running: boolean; run?: string; events: number; summary: { expert: string; accBefore?: number; accCandidate?: number; promoted?: boolean }[]; error?: string }

describe("the coordinator agent", () => {
  it("refuses bad round requests with the field named", async () => {
    await expect(client.call("coordinator", "round", { experts: ["nobody"] })).rejects.toThrow(/unknown expert\(s\) nobody: this coordinator improves sort/)
    await expect(client.call("coordinator", "round", { algo: "sft" })).rejects.toThrow(/BAD_REQUEST|DECODE|algo/)
    await expect(client.call("coordinator", "round", { run: "../x" })).rejects.toThrow(/letters, digits/)
    expect(await client.call<Status>("coordinator", "round-status", {})).toEqual({ running: false, events: 0, summary: [] })
  })

  it("starts a run in the background, refuses a second one meanwhile, and reports it to the end", async () => {
    const started = await client.call<{ run: string; algo: string; rounds: number; experts: string[] }>("coordinator", "round", { run: "agent1" }, { timeoutMs: 10_000 })
    expect(started).toEqual({ run: "agent1", algo: "orpo", rounds: 1, experts: ["sort"] })
    await expect(client.call("coordinator", "round", {})).rejects.toThrow(/run agent1 is still going/)
    let st: Status
    const t0 = Date.now()
    for (;;) {
      st = await client.call<Status>("coordinator", "round-status", {}, { timeoutMs: 10_000 })
      if (process.env.MOA_TEST_VERBOSE) console.log(new Date().toISOString(), JSON.stringify(st))
      if (!st.running || Date.now() - t0 > 300_000) break
      await new Promise((r) => setTimeout(r, 1000))
    }
    expect(st.running, coordLog.slice(-3000)).toBe(false)
    expect(st.error, coordLog.slice(-3000)).toBeUndefined()
    expect(st.run).toBe("agent1")
    const [row] = st.summary
    expect(row?.expert).toBe("sort")
    expect(typeof row?.accBefore).toBe("number")
    expect(typeof row?.accCandidate).toBe("number")
    expect(typeof row?.promoted).toBe("boolean")
    // the same events are in the round-events stream (what /round watch and moa round status read)
    const store = await Store.open(nc, CLUSTER)
    if (process.env.MOA_TEST_VERBOSE) console.log(new Date().toISOString(), "store open")
    const steps = (await store.events("agent1")).map((e) => e.step)
    if (process.env.MOA_TEST_VERBOSE) console.log(new Date().toISOString(), "events read", steps)
    expect(steps).toEqual(expect.arrayContaining(["run-started", "baseline", "samples", "job-queued", "trained", "evaluated", "decided", "round-done"]))
    expect(st.events).toBe(steps.length)
  }, 420_000)
})
