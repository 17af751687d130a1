// The coordinator as a real process (agents/coordinator), killed with SIGKILL while its expert
// trains, then started again with the same run id: it rebuilds its state from the round-events
// stream and finishes the round with every step recorded exactly once and every pair trained once.
import { afterAll, beforeAll, expect, it } from "vitest"
import { spawn, type ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { connect } from "@nats-io/transport-node"
import type { NatsConnection } from "@nats-io/nats-core"
import { startNatsServer, type NatsServerHandle } from "@moa/bus/testing"
import { Store, eventKey, type RoundEvent } from "../src/index.ts"
import { root, startExpert, weakModel, type ExpertProc } from "../test/helpers.ts"

const CLUSTER = "cr"
let nats: NatsServerHandle
let nc: NatsConnection
let work: string
let expert: ExpertProc

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), "moa-coord-resume-"))
  const [n, model] = await Promise.all([startNatsServer({ jetstream: true }), weakModel()])
  nats = n
  expert = await startExpert({ model, name: "sort", cluster: CLUSTER, nats: nats.url, artifacts: path.join(work, "sort") })
  nc = await connect({ servers: nats.url })
}, 400_000)

afterAll(async () => {
  await nc?.close()
  await expert?.stop()
  await nats?.stop()
  if (work) fs.rmSync(work, { recursive: true, force: true })
})

const coordinator = (onLine: (e: RoundEvent & { done?: boolean }, p: ChildProcess) => void) =>
  new Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }>((resolve) => {
    const p = spawn(
      process.execPath,
      ["--import", "tsx", path.join(root, "agents/coordinator/src/main.ts"), "--nats", nats.url, "--cluster", CLUSTER, "--run", "r1", "--algo", "dpo", "--rounds", "1",
        "--experts", "sort=sort", "--prompts", "6", "--k", "3", "--held-out", "10", "--hyper", JSON.stringify({ maxSteps: 20, batchSize: 2, learningRate: 1e-3 })],
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
        try {
          onLine(JSON.parse(line), p)
        } catch {
          // not an event line
        }
      }
    })
    p.stderr!.on("data", (d) => (out += d))
    p.once("exit", (code, signal) => resolve({ code, signal, out }))
  })

it("a coordinator killed while its expert trains resumes the run: nothing lost, nothing repeated", async () => {
  const first = await coordinator((e, p) => {
    // the job is queued and the expert starts training: kill the coordinator a moment later
    if (e.step === "job-queued") setTimeout(() => p.kill("SIGKILL"), 300)
  })
  expect(first.signal, first.out).toBe("SIGKILL")
  const store = await Store.open(nc, CLUSTER)
  const before = await store.events("r1")
  expect(before.map((e) => e.step)).toEqual(["run-started", "baseline", "samples", "job-queued"])

  const second = await coordinator(() => undefined)
  expect(second.code, second.out).toBe(0)
  const events = await store.events("r1")
  // every step exactly once, in order, none re-recorded by the resumed coordinator
  expect(events.map((e) => e.step)).toEqual(["run-started", "baseline", "samples", "job-queued", "trained", "evaluated", "decided", "round-done"])
  expect(new Set(events.map(eventKey)).size).toBe(events.length)
  expect(second.out).not.toMatch(/"step":"(baseline|samples|job-queued)"/)
  // the pairs recorded once are the pairs trained once
  const samples = events.find((e) => e.step === "samples")!.data as { examples: number; data: unknown[] }
  const trained = events.find((e) => e.step === "trained")!.data as { examples: number; jobId: string }
  expect(samples.data).toHaveLength(samples.examples)
  expect(trained.examples).toBe(samples.examples)
  expect(trained.jobId).toBe("r1.1.sort")
  // the job queue is empty: the job was acknowledged once done
  const jobs = await store.jsm.streams.info(store.jobsStream)
  expect(jobs.state.messages).toBe(0)
}, 480_000)
