// The aggregator model as the cluster serves it: `moa up examples/skills/cluster.ts --only
// aggregator` on a real nats-server, asked through the router's model aggregator. Skipped only when
// no aggregator is trained on the committed base (`npm run train:aggregator` makes one).
import { spawn, type ChildProcess } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { connect } from "@nats-io/transport-node"
import type { NatsConnection } from "@nats-io/nats-core"
import { startNatsServer, type NatsServerHandle } from "@moa/bus/testing"
import { Router, aggregateWithModel, natsExpert } from "@moa/router"
import { hasAggregator } from "../aggregator.ts"

const root = fileURLToPath(new URL("../../../", import.meta.url))
const trained = hasAggregator()
let nats: NatsServerHandle
let nc: NatsConnection
let up: ChildProcess
const stateDir = mkdtempSync(join(tmpdir(), "moa-aggregator-"))

beforeAll(async () => {
  if (!trained) return
  nats = await startNatsServer({ jetstream: true })
  up = spawn(process.execPath, ["packages/cli/bin/moa.js", "up", "examples/skills/cluster.ts", "--nats", nats.url, "--only", "aggregator"], {
    cwd: root,
    env: { ...process.env, MOA_STATE_DIR: stateDir, MOA_NATS_URL: "" },
    stdio: ["ignore", "pipe", "pipe"],
  })
  let out = ""
  up.stderr!.on("data", (d) => (out += d))
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`aggregator did not start:\n${out}`)), 240_000)
    up.stdout!.on("data", (d) => {
      out += d
      if (/cluster "skills" is up/.test(out)) {
        clearTimeout(t)
        resolve()
      }
    })
    up.once("exit", (code) => reject(new Error(`moa up exited with ${code}:\n${out}`)))
  })
  nc = await connect({ servers: nats.url })
}, 300_000)

afterAll(async () => {
  await nc?.drain()
  if (up && up.exitCode === null) {
    const gone = new Promise((r) => up.once("exit", r))
    up.kill("SIGTERM")
    await gone
  }
  await nats?.stop()
  rmSync(stateDir, { recursive: true, force: true })
}, 60_000)

describe.skipIf(!trained)("the aggregator agent", () => {
  it("reads the router's aggregator prompt and answers the most supported candidate; refuses a bare question", async () => {
    const agg = natsExpert(nc, "skills", "aggregator")
    const cands = (xs: string[]) => xs.map((text) => ({ expert: "x", text, weight: 1 }))
    for (const [q, cs, want] of [
      ["reverse kdjwab", ["bawjdk", "bawjdk", "bawjdk", "bawjkd"], "bawjdk"],
      ["sort dcbaxe", ["abcdex", "abcdex", "abcdex"], "abcdex"],
      ["count a in banana", ["3", "3", "3", "2"], "3"],
    ] as const) {
      const m = await aggregateWithModel(agg, q, cands([...cs]), { deadlineMs: 30_000 })
      expect(m.answer, q).toBe(want)
    }
    // a bare question is not an aggregator prompt: refused with BAD_REQUEST, which a router
    // reports as that candidate's error (here the only one: NoExpertAnswered)
    const router = new Router({ experts: [agg], deadlineMs: 30_000 })
    const err = await router.route({ prompt: "reverse abc", mode: "single", expert: "aggregator" }).catch((e) => e)
    expect(String(err?.message ?? err)).toMatch(/aggregator expects|BAD_REQUEST/)
  }, 120_000)
})
