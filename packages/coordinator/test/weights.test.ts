// Adapter versions reach other hosts through the Object Store, not a shared disk (issue 8): an
// expert process with one artifacts folder trains versions (it puts each in moa_weights_<cluster>
// itself); a second expert process of the same name with another artifacts folder — another host —
// fetches them over NATS when a rollback, a promotion or a request names them, into its own
// folder, byte-identical and validated, and serves the same answers. Rollback to any version with
// one call, across the "hosts"; every replica follows the registry (KV), so a promotion or rollback
// reaches the replicas on every host; objects that could escape the folder or are not an adapter are refused.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import type { NatsConnection } from "@nats-io/nats-core"
import { Objm } from "@nats-io/obj"
import type { AgentClient } from "@moa/runtime"
import type { MoaError } from "@moa/protocol"
import { weightsBucket } from "@moa/expert"
import { Store, rollback, skillTasks } from "../src/index.ts"
import { openHarness, type ExpertProc, type Harness } from "./helpers.ts"

const CLUSTER = "cw"
let h: Harness
let nc: NatsConnection
let client: AgentClient
let work: string
let hostA: ExpertProc | undefined
let hostB: ExpertProc | undefined
let hostC: ExpertProc | undefined

beforeAll(async () => {
  h = await openHarness("weights", CLUSTER)
  ;({ nc, client, work } = h)
}, 400_000)

afterAll(() => h?.close())

const dirA = () => path.join(work, "hostA")
const dirB = () => path.join(work, "hostB")
const dirC = () => path.join(work, "hostC")
const prompts = skillTasks("sort").tasks("test", 12, 5).map((t) => t.prompt)
const answers = (adapter?: string) =>
  Promise.all(prompts.map((prompt) => client.call(`sort`, "generate", { prompt, temperature: 0, maxTokens: 12, ...(adapter ? { adapter } : {}) }).then((r) => r.text)))
const adapters = () => client.call<{ adapters: { name: string; current: string; versions: string[] }[] }>("sort", "adapters-list", {})
const failure = async (p: Promise<unknown>): Promise<MoaError> => {
  try {
    await p
  } catch (e) {
    return e as MoaError
  }
  throw new Error("expected the call to fail")
}
const sft = (baseVersion: string, completion: (p: string) => string) =>
  client.call<{ version: string; objects?: string[] }>(
    "sort",
    "train",
    { adapter: "sort", baseVersion, algorithm: "sft", data: skillTasks("sort").tasks("train", 16, 3).map((t) => ({ prompt: t.prompt, completion: completion(t.reference!) })), hyper: { steps: 6, lr: 0.02 } },
    { timeoutMs: 120_000 },
  )

describe("adapter weights across hosts through the Object Store", () => {
  let seenA: Record<string, string[]> = {}

  it("host A trains two versions and puts each in the Object Store itself", async () => {
    hostA = await h.expert("sort", dirA())
    const v1 = await sft("new", (r) => r)
    const v2 = await sft(v1.version, (r) => [...r].reverse().join(""))
    expect([v1.version, v2.version]).toEqual(["v1", "v2"])
    expect(v1.objects).toEqual(["sort/sort/v1/adapter_config.json", "sort/sort/v1/adapter_model.safetensors"])
    // the coordinator's registry names the versions (what a round would have written)
    const store = await Store.open(nc, CLUSTER)
    await store.putRegistry({ expert: "sort", adapter: "sort", current: "v2", history: [{ version: "v1", action: "registered", at: "t" }, { version: "v2", action: "promoted", at: "t" }] })
    seenA = { base: await answers(), v1: await answers("sort@v1"), v2: await answers("sort@v2") }
    expect(seenA.v1).not.toEqual(seenA.v2) // the two versions really differ
    await hostA.stop()
    hostA = undefined
  }, 300_000)

  it("host B (another artifacts folder) fetches the registry's version at start, and any version a rollback or a request names", async () => {
    hostB = await h.expert("sort", dirB())
    // it follows the registry: v2 (current there) is fetched over NATS and served without being asked
    await until(async () => (await adapters()).adapters.find((a) => a.name === "sort")?.current === "v2")
    for (const f of ["adapter_config.json", "adapter_model.safetensors"])
      expect(fs.readFileSync(path.join(dirB(), "adapters/sort/v2", f)).equals(fs.readFileSync(path.join(dirA(), "adapters/sort/v2", f)))).toBe(true)
    expect(await answers("sort")).toEqual(seenA.v2) // "sort" = its current version
    // a request that names a version host B never had fetches it too
    expect(fs.existsSync(path.join(dirB(), "adapters/sort/v1"))).toBe(false)
    expect(await answers("sort@v1")).toEqual(seenA.v1)
    expect(fs.existsSync(path.join(dirB(), "adapters/sort/v1/adapter_model.safetensors"))).toBe(true)
    // rollback with one call: to v1, to the base, forward to v2
    const r = await rollback(nc, CLUSTER, "sort", "v1")
    expect(r.current).toBe("v1")
    expect(await answers("sort")).toEqual(seenA.v1)
    expect((await rollback(nc, CLUSTER, "sort", "base")).current).toBe("base")
    expect((await failure(answers("sort"))).code).toBe("NOT_FOUND")
    expect(await answers()).toEqual(seenA.base)
    expect((await rollback(nc, CLUSTER, "sort", "v2")).current).toBe("v2")
    expect(await answers("sort")).toEqual(seenA.v2)
    const reg = await (await Store.open(nc, CLUSTER)).registry("sort")
    expect(reg?.history.map((h) => `${h.action}:${h.version}`)).toEqual(["registered:v1", "promoted:v2", "rollback:v1", "rollback:base", "rollback:v2"])
  }, 300_000)

  it("a version in neither place, a version name that leaves the folder, and objects that are not an adapter are refused", async () => {
    const none = await failure(rollback(nc, CLUSTER, "sort", "v9"))
    expect(none.code).toBe("NOT_FOUND")
    expect(none.message).toMatch(/no version "v9".*moa_weights_cw under sort\/sort\/ \(v1, v2\)/)
    const escape = await failure(client.call("sort", "adapters-load", { name: "sort", version: "../../x" }))
    expect(escape.code).toBe("BAD_REQUEST")
    // a stray object under a version prefix, and a version whose weights are not an adapter of this base
    const obj = await new Objm(nc).open(weightsBucket(CLUSTER))
    await obj.putBlob({ name: "sort/sort/v5/../../../evil" }, new TextEncoder().encode("x"))
    const stray = await failure(client.call("sort", "adapters-load", { name: "sort", version: "v5" }))
    expect(stray.code).toBe("BAD_REQUEST")
    expect(stray.message).toMatch(/is not one of an adapter's files/)
    await obj.putBlob({ name: "sort/sort/v6/adapter_config.json" }, new TextEncoder().encode("{\"r\": 8}"))
    await obj.putBlob({ name: "sort/sort/v6/adapter_model.safetensors" }, new TextEncoder().encode("not safetensors"))
    const broken = await failure(client.call("sort", "adapters-load", { name: "sort", version: "v6" }))
    expect(broken.code).toBe("BAD_REQUEST")
    // nothing of either reached the disk, and the expert still serves its version
    expect(fs.readdirSync(path.join(dirB(), "adapters/sort")).filter((f) => /v5|v6/.test(f))).toEqual([])
    expect(fs.existsSync(path.join(work, "evil"))).toBe(false)
    expect(await answers("sort")).toEqual(seenA.v2)
  }, 120_000)

  it("two replicas of the expert on two hosts share its queue group; one rollback reaches both", async () => {
    hostC = await h.expert("sort", dirC())
    const currents = async () => {
      const seen = new Map<number, string | undefined>()
      for (let i = 0; i < 40; i++) {
        const m = await client.call<{ pid: number; adapters: { adapters: { name: string; current: string }[] } }>("sort", "model-info", {})
        seen.set(m.pid, m.adapters.adapters.find((a) => a.name === "sort")?.current)
      }
      return seen
    }
    // the new replica picked up the registry's v2 at start
    await until(async () => [...(await currents()).values()].every((v) => v === "v2") && (await currents()).size === 2)
    await rollback(nc, CLUSTER, "sort", "v1")
    await until(async () => {
      const c = await currents()
      return c.size === 2 && [...c.values()].every((v) => v === "v1")
    })
    expect(fs.existsSync(path.join(dirC(), "adapters/sort/v1/adapter_model.safetensors"))).toBe(true)
    await rollback(nc, CLUSTER, "sort", "base")
    await until(async () => {
      const c = await currents()
      return c.size === 2 && [...c.values()].every((v) => v === undefined)
    })
  }, 300_000)
})

/** Polls `ok` every 250 ms until it holds (the test's own timeout bounds it). */
async function until(ok: () => Promise<boolean>): Promise<void> {
  while (!(await ok().catch(() => false))) await new Promise((r) => setTimeout(r, 250))
}
