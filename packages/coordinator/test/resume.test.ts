// Durability (issue 6): a coordinator process killed (SIGKILL) while its expert trains, started
// again with the same run id, rebuilds its state from the round-events stream and finishes the
// round; an expert process killed while it trains and started again is waited for and gets the job
// again. Either way every step is recorded exactly once, the recorded pairs are the pairs trained,
// the expert trains the job once (one new version), and the job queue ends empty.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { spawn, type ChildProcess } from "node:child_process"
import * as path from "node:path"
import type { NatsConnection } from "@nats-io/nats-core"
import type { NatsServerHandle } from "@moa/bus/testing"
import type { AgentClient } from "@moa/runtime"
import { Coordinator, Store, eventKey, skillTasks, type RoundEvent } from "../src/index.ts"
import { openHarness, root, type Harness } from "./helpers.ts"

const CLUSTER = "cr"
const HYPER = { maxSteps: 30, batchSize: 2, learningRate: 1e-3 }
let h: Harness
let nats: NatsServerHandle
let nc: NatsConnection
let client: AgentClient

beforeAll(async () => {
  h = await openHarness("resume", CLUSTER)
  ;({ nats, nc, client } = h)
}, 400_000)

afterAll(() => h?.close())

const start = (name: string) => h.expert(name)
type Info = { training: { running?: string; jobsDone: number }; adapters: { adapters: { name: string; versions: string[] }[] } }
const info = (expert: string) => client.call<Info>(expert, "model-info", {})
/** Resolves once the expert reports a training job running. */
const whenTraining = async (expert: string) => {
  for (;;) {
    const i = await info(expert).catch(() => undefined)
    if (i?.training.running) return
    await new Promise((r) => setTimeout(r, 100))
  }
}

const STEPS = ["run-started", "baseline", "samples", "job-queued", "trained", "evaluated", "decided", "round-done"]
const checkRun = async (run: string, expert: string) => {
  const store = await Store.open(nc, CLUSTER)
  const events = await store.events(run)
  // every step exactly once, in order
  expect(events.map((e) => e.step)).toEqual(STEPS)
  expect(new Set(events.map(eventKey)).size).toBe(events.length)
  // the pairs recorded once are the pairs trained once
  const samples = events.find((e) => e.step === "samples")!.data as { examples: number; data: unknown[] }
  const trained = events.find((e) => e.step === "trained")!.data as { examples: number; jobId: string; version: string }
  expect(samples.data).toHaveLength(samples.examples)
  expect(trained.examples).toBe(samples.examples)
  expect(trained.jobId).toBe(`${run}.1.${expert}`)
  // the expert trained the job once: one new version
  expect(trained.version).toBe("v1")
  expect((await info(expert)).adapters.adapters.find((a) => a.name === expert)?.versions).toEqual(["v1"])
  // the job queue is empty: the job was acknowledged once its outcome was recorded
  expect((await store.jsm.streams.info(store.jobsStream)).state.messages).toBe(0)
  return events
}

const coordinatorProcess = (run: string, expert: string, onLine: (e: RoundEvent, p: ChildProcess) => void) =>
  new Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }>((resolve) => {
    const p = spawn(
      process.execPath,
      ["--import", "tsx", path.join(root, "agents/coordinator/src/main.ts"), "--nats", nats.url, "--cluster", CLUSTER, "--run", run, "--algo", "dpo", "--rounds", "1",
        "--experts", `${expert}=sort`, "--prompts", "6", "--k", "3", "--held-out", "10", "--hyper", JSON.stringify(HYPER)],
      { cwd: root, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, MOA_LOG_LEVEL: "warn" } },
    )
    let out = ""
    let buf = ""
    p.stdout!.on("data", (d) => {
      out += d
      buf += d
      let i: number
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 1)
        let e: RoundEvent | undefined
        try {
          e = JSON.parse(line)
        } catch {
          // not an event line
        }
        if (e?.step) onLine(e, p)
      }
    })
    p.stderr!.on("data", (d) => (out += d))
    p.once("exit", (code, signal) => resolve({ code, signal, out }))
  })

describe("kill and resume", () => {
  it("a coordinator killed while its expert trains resumes the run: nothing lost, nothing repeated", async () => {
    await start("sort")
    const first = await coordinatorProcess("r1", "sort", (e, p) => {
      // the job is queued: kill the coordinator as soon as the expert is training it
      if (e.step === "job-queued") void whenTraining("sort").then(() => p.kill("SIGKILL"))
    })
    expect(first.signal, first.out).toBe("SIGKILL")
    const store = await Store.open(nc, CLUSTER)
    expect((await store.events("r1")).map((e) => e.step)).toEqual(STEPS.slice(0, 4))

    const second = await coordinatorProcess("r1", "sort", () => undefined)
    expect(second.code, second.out).toBe(0)
    // the resumed coordinator recorded only what was left
    expect(second.out).not.toMatch(/"step":"(baseline|samples|job-queued)"/)
    await checkRun("r1", "sort")
    // the job the killed coordinator had started was not trained a second time
    expect((await info("sort")).training.jobsDone).toBe(1)
  }, 300_000)

  it("an expert killed while it trains is waited for, gets the job again and trains it once", async () => {
    const first = await start("sorte")
    let restarted: Promise<void> | undefined
    const c = await Coordinator.open(nc, {
      cluster: CLUSTER,
      run: "r2",
      algo: "dpo",
      rounds: 1,
      experts: [{ name: "sorte", tasks: skillTasks("sort") }],
      prompts: 6,
      k: 3,
      heldOut: 10,
      hyper: HYPER,
      expertGraceMs: 180_000,
      onEvent: (e) => {
        if (e.step === "job-queued")
          restarted = whenTraining("sorte").then(async () => {
            await first.stop() // SIGKILL mid-job: nothing of it is saved
            await start("sorte") // same artifacts folder, a new process
          })
      },
    })
    const state = await c.run()
    await restarted
    expect(state.log.filter((e) => e.step === "job-failed")).toEqual([])
    await checkRun("r2", "sorte")
  }, 300_000)
})
