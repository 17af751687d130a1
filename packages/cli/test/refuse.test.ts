/** `moa up` refuses invalid cluster files before starting anything; gives up on crash loops and says why. */
import { existsSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { startNatsServer, type NatsServerHandle } from "@moa/bus/testing"
import { fixture, runMoa } from "./helpers.ts"

describe("moa up refusals", () => {
  let nats: NatsServerHandle
  let dir: string
  beforeAll(async () => {
    nats = await startNatsServer({ jetstream: false })
    dir = mkdtempSync(join(tmpdir(), "moa-refuse-"))
  })
  afterAll(async () => {
    await nats?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  it("refuses an invalid cluster file before starting anything, naming the file and every problem", async () => {
    const r = await runMoa(["up", fixture("bad-cluster.ts"), "--nats", nats.url], { MOA_STATE_DIR: dir })
    expect(r.code).toBe(1)
    expect(r.stderr).toContain("bad-cluster.ts")
    expect(r.stderr).toMatch(/unknown role "wizard"/)
    expect(r.stderr).toMatch(/duplicate agent name "a"/)
    expect(r.stderr).toMatch(/agent name "b c" may only contain/)
    expect(r.stderr).toMatch(/replicas must be an integer >= 1 \(got 0\)/)
    expect(r.stderr).toMatch(/missing handlers/)
    expect(existsSync(join(dir, "bad.json"))).toBe(false)
    expect(r.stdout).not.toContain("is up")
  }, 300_000)

  it("refuses a missing file", async () => {
    const r = await runMoa(["up", "no/such/cluster.ts", "--nats", nats.url], { MOA_STATE_DIR: dir })
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/no\/such\/cluster\.ts.*file not found/s)
  }, 300_000)

  it("gives up on an agent that keeps crashing and says why", async () => {
    const r = await runMoa(["up", fixture("crash-cluster.ts"), "--nats", nats.url], { MOA_STATE_DIR: dir })
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/crashy#0 crashed 3 times (within 60 s|in a row before becoming ready) \(last: exit code 3\); giving up/)
    expect(r.stderr).toContain("cannot load the model weights")
    expect(existsSync(join(dir, "crashy.json"))).toBe(false)
  }, 300_000)
})
