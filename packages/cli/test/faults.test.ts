/**
 * A detached cluster of real agent processes on a real nats-server: status and call through
 * the CLI, kill -9 of an agent under load, the NATS server restarted under load, and
 * `moa down` (SIGTERM to the `moa up` supervisor) draining everything with nothing left.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { connect } from "@nats-io/transport-node"
import type { NatsConnection } from "@nats-io/nats-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { discoverPromise } from "@moa/bus"
import { startNatsServer, type NatsServerHandle } from "@moa/bus/testing"
import { makeClient, type AgentClient } from "@moa/runtime"
import type { RunState } from "../src/state.ts"
import { alive, fixture, runMoa, sleep, waitFor } from "./helpers.ts"

const DEADLINE = 2000

interface Outcome {
  readonly ok: boolean
  readonly code?: string
  readonly ms: number
}

/** Keep `n` calls in flight until stopped; every call has a 2 s deadline. */
const load = (client: AgentClient, n: number) => {
  const outcomes: Array<Outcome> = []
  let running = true
  const worker = async () => {
    while (running) {
      const t0 = Date.now()
      try {
        await client.call("work", "sleep", { ms: 20 }, { timeoutMs: DEADLINE })
        outcomes.push({ ok: true, ms: Date.now() - t0 })
      } catch (e) {
        outcomes.push({ ok: false, code: (e as { code?: string }).code, ms: Date.now() - t0 })
        await sleep(20)
      }
    }
  }
  const workers = Array.from({ length: n }, worker)
  return {
    outcomes,
    stop: async () => {
      running = false
      await Promise.all(workers)
      return outcomes
    },
  }
}

describe("a supervised cluster under faults", () => {
  let nats: NatsServerHandle
  let dir: string
  let nc: NatsConnection
  let client: AgentClient
  const state = () => JSON.parse(readFileSync(join(dir, "faults.json"), "utf8")) as RunState
  const env = () => ({ MOA_STATE_DIR: dir })

  beforeAll(async () => {
    nats = await startNatsServer({ jetstream: false })
    dir = mkdtempSync(join(tmpdir(), "moa-faults-"))
    const r = await runMoa(["up", fixture("work-cluster.ts"), "--detach", "--nats", nats.url], env())
    if (r.code !== 0) throw new Error(`moa up --detach failed:\n${r.stdout}\n${r.stderr}`)
    expect(r.stdout).toContain(`cluster "faults" is up`)
    nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 })
    client = makeClient(nc, "faults")
  }, 300_000)

  afterAll(async () => {
    await nc?.close()
    // Whatever happened, leave nothing behind.
    if (existsSync(join(dir, "faults.json"))) {
      const st = state()
      for (const pid of [st.pid, ...st.agents.map((a) => a.pid)]) if (alive(pid)) process.kill(pid!, "SIGKILL")
    }
    await nats?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  it("moa status --json lists the agent with its replicas; moa call answers", async () => {
    const s = await runMoa(["status", "--json", "--nats", nats.url, "--cluster", "faults"], env())
    expect(s.code).toBe(0)
    const out = JSON.parse(s.stdout) as { agents: Array<{ agent: string; replicas: number; role: string; backend: string }> }
    expect(out.agents).toHaveLength(1)
    expect(out.agents[0]).toMatchObject({ agent: "work", replicas: 2, role: "expert", backend: "none" })

    const c = await runMoa(["call", "work", "pid", "{}"], env())
    expect(c.code).toBe(0)
    expect(state().agents.map((a) => a.pid)).toContain(JSON.parse(c.stdout).pid)

    const bad = await runMoa(["call", "work", "nope", "{}"], env())
    expect(bad.code).toBe(1)
    expect(bad.stderr).toMatch(/UNKNOWN_VERB/)
  }, 240_000)

  it("kill -9 of an agent under load: restarted by the supervisor, no request hangs past its deadline", async () => {
    const before = state().agents
    const victim = before[0]
    const l = load(client, 8)
    await sleep(500)
    process.kill(victim.pid!, "SIGKILL")
    const restarted = await waitFor(
      "the killed replica to be restarted",
      () => state().agents.find((a) => a.agent === victim.agent && a.replica === victim.replica && a.pid !== victim.pid && alive(a.pid)),
      120_000,
    )
    await waitFor("both replicas to serve again", async () => (await discoverPromise(nc, { name: "work", waitMs: 300 })).length === 2, 120_000)
    await sleep(300)
    const outcomes = await l.stop()
    expect(restarted.pid).not.toBe(victim.pid)
    expect(outcomes.length).toBeGreaterThan(0)
    // Every call settled: with a reply or an error, never long after its deadline.
    const slowest = Math.max(...outcomes.map((o) => o.ms))
    expect(slowest).toBeLessThan(DEADLINE + 3000)
    for (const o of outcomes.filter((o) => !o.ok)) expect(["TIMEOUT", "UNAVAILABLE"]).toContain(o.code)
    // The cluster kept answering throughout, and answers after the restart.
    expect(outcomes.filter((o) => o.ok).length).toBeGreaterThan(0)
    expect(await client.call("work", "pid", {})).toHaveProperty("pid")
  }, 300_000)

  it("nats-server restarted under load: agents reconnect and serve again without restarting", async () => {
    const pidsBefore = state().agents.map((a) => a.pid)
    const l = load(client, 8)
    await sleep(300)
    await nats.restart({ hard: true, downMs: 500 })
    // Count successes after the restart.
    const okBefore = l.outcomes.filter((o) => o.ok).length
    await waitFor("calls to succeed again after the restart", () => l.outcomes.filter((o) => o.ok).length > okBefore + 20, 120_000)
    const outcomes = await l.stop()
    expect(Math.max(...outcomes.map((o) => o.ms))).toBeLessThan(DEADLINE + 3000)
    await waitFor("both replicas to be discoverable again", async () => (await discoverPromise(nc, { name: "work", waitMs: 300 })).length === 2, 60_000)
    expect(state().agents.map((a) => a.pid)).toEqual(pidsBefore)
    for (const pid of pidsBefore) expect(alive(pid)).toBe(true)
  }, 300_000)

  it("moa down (SIGTERM to moa up) finishes in-flight requests, then nothing is left running", async () => {
    const st = state()
    const pids = [st.pid, ...st.agents.map((a) => a.pid)]
    const inFlight = Array.from({ length: 4 }, () => client.call("work", "sleep", { ms: 1500 }, { timeoutMs: 30_000 }))
    await sleep(300)
    const down = await runMoa(["down", "faults"], env())
    expect(down.code).toBe(0)
    expect(down.stdout).toContain(`cluster "faults" drained and stopped`)
    const replies = await Promise.allSettled(inFlight)
    expect(replies.map((r) => r.status)).toEqual(["fulfilled", "fulfilled", "fulfilled", "fulfilled"])
    for (const pid of pids) expect(alive(pid)).toBe(false)
    expect(existsSync(join(dir, "faults.json"))).toBe(false)
  }, 240_000)
})
