// Bad input and faults during a round (issue 6): a job message that is not JSON, one that fails the
// TrainJob schema, a job for an expert that does not exist, a job for a version that does not exist,
// a reward function that throws, an expert named in the run that is not running, and an expert
// killed once its job is queued — each is recorded with a clear reason, and the round goes on for
// the expert that is fine (trained, evaluated, decided).
import { afterAll, beforeAll, expect, it } from "vitest"
import type { NatsConnection } from "@nats-io/nats-core"
import { Coordinator, Store, skillTasks } from "../src/index.ts"
import { openHarness, type ExpertProc, type Harness } from "./helpers.ts"

const CLUSTER = "cf"
let h: Harness
let nc: NatsConnection
let sort: ExpertProc
let sort2: ExpertProc

beforeAll(async () => {
  h = await openHarness("faults", CLUSTER)
  nc = h.nc
  ;[sort, sort2] = await Promise.all([h.expert("sort"), h.expert("sort2")])
}, 400_000)

afterAll(() => h?.close())

it("records bad jobs, a throwing reward function and an expert that disappears, and goes on for the others", async () => {
  const store = await Store.open(nc, CLUSTER)
  // queued before the round: a message that is not JSON, one that fails the schema, a job for an unknown expert, one for an unknown version
  await store.enqueueRaw("sort", "{not json")
  await store.enqueueRaw("sort", JSON.stringify({ jobId: 7, run: "faults" }))
  const job = (expert: string, baseVersion: string) => ({ jobId: `faults.99.${expert}`, run: "faults", round: 99, expert, adapter: "sort", baseVersion, algorithm: "dpo", data: [{ prompt: "sort ba=", chosen: "ab", rejected: "ba" }], hyper: {} })
  await store.enqueueJob("ghost", job("ghost", "current"), "faults.99.ghost")
  await store.enqueueJob("sort", job("sort", "v99"), "faults.99.sort")
  let calls = 0
  const c = await Coordinator.open(nc, {
    cluster: CLUSTER,
    run: "faults",
    algo: "dpo",
    rounds: 1,
    experts: [
      { name: "sort", tasks: skillTasks("sort") },
      { name: "sort2", tasks: skillTasks("sort") },
      { name: "nosuch", tasks: skillTasks("sort") },
    ],
    prompts: 4,
    k: 3,
    heldOut: 8,
    hyper: { maxSteps: 2 },
    expertGraceMs: 4000,
    rewardSources: [
      {
        // a judge that fails every other call (and abstains otherwise)
        name: "flaky",
        fn: () => {
          if (calls++ % 2 === 0) throw new Error("judge unavailable for this question")
          return undefined
        },
      },
    ],
    // the second expert disappears once its job is queued (before it trains)
    onEvent: (e) => {
      if (e.expert === "sort2" && e.step === "job-queued") sort2.proc.kill("SIGKILL")
    },
  })
  const state = await c.run()
  const log = JSON.stringify(state.log.map((e) => [e.round, e.expert, e.step, e.data.reason]))
  const ev = (expert: string, step: string, round = 1) => state.log.find((e) => e.expert === expert && e.step === step && e.round === round)
  const invalid = state.log.filter((e) => e.step === "job-invalid").map((e) => String(e.data.reason))
  expect(invalid, log).toHaveLength(2)
  expect(invalid.every((r) => /fails its schema/.test(r))).toBe(true)
  expect(String(ev("ghost", "job-failed", 99)?.data.reason), log).toMatch(/not running \(no responders\)/)
  expect(String(ev("sort", "job-failed", 99)?.data.reason), log).toMatch(/NOT_FOUND.*v99/)
  expect(String(ev("nosuch", "skipped")?.data.reason), log).toMatch(/no responders/)
  expect(String(ev("sort2", "job-failed")?.data.reason), log).toMatch(/no responders|not running/i)
  const rewardErrors = ev("sort", "reward-errors")?.data as { count: number; reasons: string[] } | undefined
  expect(rewardErrors?.count, log).toBeGreaterThan(0)
  expect(rewardErrors!.reasons[0]).toMatch(/flaky: judge unavailable/)
  // the round went on for sort: trained, evaluated, decided
  expect(ev("sort", "trained"), log).toBeDefined()
  expect(ev("sort", "decided"), log).toBeDefined()
  expect(ev("_", "round-done"), log).toBeDefined()
  // every job message was acknowledged once its outcome was recorded
  expect((await store.jsm.streams.info(store.jobsStream)).state.messages).toBe(0)
}, 300_000)
