// Health from $SRV.STATS polls on a busy machine: an expert that misses polls because it is busy
// (its event loop blocked, as when a model decodes or trains) is not taken for dead while a call of
// ours is in flight or its last sign of life is recent; a killed one is marked down after
// `missesToDown` polls; the reply window widens after a miss and shrinks back. Real nats-server,
// real runtime agent processes.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { connect } from "@nats-io/transport-node"
import type { NatsConnection } from "@nats-io/nats-core"
import { startNatsServer, type NatsServerHandle } from "@moa/bus/testing"
import { availability, CallOutcomes, ClusterMonitor, natsExpert } from "../src/index.ts"
import { startRuleExpert, type ExpertProcess } from "./fixtures/cluster.ts"

const CLUSTER = "health"
let nats: NatsServerHandle
let nc: NatsConnection
let busy: ExpertProcess
let victim: ExpertProcess

beforeAll(async () => {
  nats = await startNatsServer({ jetstream: false })
  // one process each: "busy" blocks its own event loop, "victim" gets killed
  ;[busy, victim] = await Promise.all([
    startRuleExpert({ nats: nats.url, cluster: CLUSTER, name: "busy", skills: "all", blockMs: 8000 }),
    startRuleExpert({ nats: nats.url, cluster: CLUSTER, name: "victim", skills: "all" }),
  ])
  nc = await connect({ servers: nats.url })
}, 240_000)

afterAll(async () => {
  await nc?.drain()
  await Promise.all([busy?.stop(), victim?.stop()])
  await nats?.stop()
})

describe("expert health from $SRV.STATS", () => {
  it("an expert busy with our call misses polls but stays healthy; the window widens, then shrinks back", async () => {
    // the same expert seen by two clients: one has a call in flight, the other none and no grace period
    const caller = natsExpert(nc, CLUSTER, "busy")
    const bystander = natsExpert(nc, CLUSTER, "busy", { health: { graceMs: 0 } })
    const monitor = new ClusterMonitor(nc, CLUSTER, () => [caller, bystander], 1000, { minWindowMs: 300, maxWindowMs: 600 })
    for (let i = 0; i < 5 && !caller.seen; i++) await monitor.poll()
    expect(caller.seen).toBe(true)
    expect(caller.stats()).toMatchObject({ healthy: true, replicas: 1, missedPolls: 0 })

    const call = caller.generate({ prompt: "block" }, { deadlineMs: 60_000 })
    // the expert's event loop is stuck for 8 s: it cannot answer $SRV.STATS
    for (let i = 0; i < 20 && (caller.stats().missedPolls ?? 0) < 3; i++) await monitor.poll()
    expect(caller.stats().missedPolls).toBeGreaterThanOrEqual(3)
    expect(monitor.windowMs).toBeGreaterThan(300)
    expect(caller.stats()).toMatchObject({ healthy: true, inflight: 1 }) // busy working for us, not dead
    expect(bystander.stats().healthy).toBe(false) // without that evidence, 3 misses past the grace period are death

    expect((await call).text).toBe("done")
    for (let i = 0; i < 10 && (caller.stats().missedPolls ?? 0) > 0; i++) await monitor.poll()
    expect(caller.stats()).toMatchObject({ healthy: true, missedPolls: 0 })
    expect(bystander.stats()).toMatchObject({ healthy: true, missedPolls: 0 }) // back: found again
    for (let i = 0; i < 5; i++) await monitor.poll()
    expect(monitor.windowMs).toBe(300)
  }, 120_000)

  it("a killed expert is marked down after missesToDown polls, not at the first miss; a grace period holds it longer", async () => {
    const strict = natsExpert(nc, CLUSTER, "victim", { health: { missesToDown: 3, graceMs: 0 } })
    const patient = natsExpert(nc, CLUSTER, "victim", { health: { missesToDown: 1, graceMs: 600_000 } })
    const monitor = new ClusterMonitor(nc, CLUSTER, () => [strict, patient], 1000, { minWindowMs: 300, maxWindowMs: 600 })
    for (let i = 0; i < 5 && !strict.seen; i++) await monitor.poll()
    expect(strict.stats().healthy).toBe(true)
    await victim.stop()
    await monitor.poll()
    expect(strict.stats()).toMatchObject({ healthy: true, missedPolls: 1, replicas: 0 })
    await monitor.poll()
    expect(strict.stats()).toMatchObject({ healthy: true, missedPolls: 2 })
    await monitor.poll()
    expect(strict.stats()).toMatchObject({ healthy: false, missedPolls: 3 })
    expect(patient.stats().healthy).toBe(true) // seen alive less than its grace period ago
    // calls to it now fail fast with no-responders
    await expect(strict.generate({ prompt: "add 1 2" }, { deadlineMs: 2000 })).rejects.toMatchObject({ reason: "no-responders" })
  }, 60_000)

  it("an expert never seen alive is down after missesToDown empty polls (not the first: it may still be starting); bad policies are refused", async () => {
    const ghost = natsExpert(nc, CLUSTER, "ghost")
    expect(ghost.stats().healthy).toBe(true) // not polled yet: benefit of the doubt
    const monitor = new ClusterMonitor(nc, CLUSTER, () => [ghost], 1000, { minWindowMs: 300, maxWindowMs: 300 })
    await monitor.poll()
    await monitor.poll()
    expect(ghost.stats()).toMatchObject({ healthy: true, replicas: 0, missedPolls: 2 })
    await monitor.poll()
    expect(ghost.stats()).toMatchObject({ healthy: false, replicas: 0, missedPolls: 3 })
    expect(() => natsExpert(nc, CLUSTER, "x", { health: { missesToDown: 0 } })).toThrow(/missesToDown/)
    expect(() => natsExpert(nc, CLUSTER, "x", { health: { graceMs: -1 } })).toThrow(/graceMs/)
    expect(() => natsExpert(nc, CLUSTER, "x", { health: { errorWindowMs: 0 } })).toThrow(/errorWindowMs/)
    expect(() => new ClusterMonitor(nc, CLUSTER, () => [], 1000, { minWindowMs: 500, maxWindowMs: 100 })).toThrow(/minWindowMs/)
  })

  it("an expert whose every recent call failed gets no share, but only until those failures age out", async () => {
    // nobody serves "gone": every call fails fast with no-responders (as for a crashed expert)
    const gone = natsExpert(nc, CLUSTER, "gone", { health: { errorWindowMs: 1500 } })
    for (let i = 0; i < 20; i++) await expect(gone.generate({ prompt: "add 1 2" }, { deadlineMs: 1000 })).rejects.toMatchObject({ reason: "no-responders" })
    expect(gone.stats()).toMatchObject({ healthy: false, errorRate: 1 }) // 3 failures in a row: down for 5 s
    expect(availability(gone.stats())).toBe(0) // so the gate sends it nothing, and no new outcome arrives
    await new Promise((r) => setTimeout(r, 1600))
    // the failures aged out: it gets a share again (before the bound, errorRate 1 was for ever)
    expect(gone.stats()).toMatchObject({ healthy: true, errorRate: 0 })
    expect(availability(gone.stats())).toBeGreaterThan(0)
  })

  it("CallOutcomes: the error rate over the last calls that are young enough", () => {
    let t = 0
    const o = new CallOutcomes(4, 1000, () => t)
    o.push(true)
    t = 100
    o.push(false)
    o.push(false)
    expect(o.errorRate()).toBeCloseTo(2 / 3)
    expect(o.trailingFailures()).toBe(2)
    o.push(false)
    o.push(false) // the size bound drops the success
    expect(o.errorRate()).toBe(1)
    t = 1101 // the failures (t = 100) are now older than 1 s
    expect(o.errorRate()).toBe(0)
    expect(o.trailingFailures()).toBe(0)
  })
})
