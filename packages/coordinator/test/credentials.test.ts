// Issue 8 under `moa auth init` credentials (nkeys + mutual TLS, a real nats-server with the
// generated permissions): the coordinator's credential can create and use everything a round needs
// (round events, the jobs work queue, the adapter registry, the weights bucket, reading the
// console's feedback, which the console's credential may write); an expert's credential can put the versions it trains in the weights bucket,
// fetch versions it lacks and follow its registry entry — and is refused writing the registry,
// publishing a training job or recording a round event, with the refusal logged.
import { afterAll, beforeAll, expect, it } from "vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { connect } from "@nats-io/transport-node"
import type { NatsConnection } from "@nats-io/nats-core"
import { jetstream } from "@nats-io/jetstream"
import { Kvm } from "@nats-io/kv"
import { freePort } from "@moa/bus/testing"
import { authInit, natsAuthOptions, startServerProcess, type AuthInitResult, type ServerProcess } from "@moa/cluster-net"
import { fetchVersion, followRegistry, registryBucket, storedVersions, uploadVersion, type RegistryCurrent } from "@moa/expert"
import { recordFeedback } from "../../cli/src/console/feedback.ts"
import { Store, readFeedback } from "../src/index.ts"

const CLUSTER = "cc"
let dir: string
let auth: AuthInitResult
let server: ServerProcess
let url: string
const conns: NatsConnection[] = []

const as = async (user: string) => {
  const c = auth.credentials.find((x) => x.user === user)!
  const nc = await connect({ servers: url, ...natsAuthOptions({ user: c.user, seedFile: c.seedFile, inboxPrefix: c.inboxPrefix, caFile: auth.caFile, certFile: c.certFile, keyFile: c.keyFile }), maxReconnectAttempts: 0 })
  conns.push(nc)
  return nc
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "moa-coord-creds-"))
  auth = authInit({ out: path.join(dir, "auth"), cluster: CLUSTER, experts: ["sort", "add"], router: "router", coordinator: "coord" })
  const port = await freePort()
  url = `tls://127.0.0.1:${port}`
  const conf = path.join(dir, "server.conf")
  fs.writeFileSync(conf, `listen: "127.0.0.1:${port}"\nserver_name: "creds-test"\njetstream { store_dir: ${JSON.stringify(path.join(dir, "js"))} }\ninclude "auth/auth.conf"\ninclude "auth/tls.conf"\n`)
  server = await startServerProcess({ configFile: conf })
}, 120_000)

afterAll(async () => {
  for (const nc of conns) await nc.close().catch(() => undefined)
  await server?.kill()
  if (dir) fs.rmSync(dir, { recursive: true, force: true })
})

it("the coordinator's and an expert's credentials can do their part of a round and the weights' travel, and no more", async () => {
  // coordinator: streams and buckets, an event, a job through the work queue, the registry, feedback
  const coord = await as("coordinator-coord")
  const store = await Store.open(coord, CLUSTER)
  await store.record({ run: "r", round: 1, expert: "sort", step: "baseline", at: "t", data: { accuracy: 0.5 } })
  expect((await store.events("r")).map((e) => e.step)).toEqual(["baseline"])
  await store.enqueueJob("sort", { jobId: "r.1.sort" }, "r.1.sort")
  const job = await (await store.jobConsumer()).next({ expires: 3000 })
  expect(job?.json<{ jobId: string }>().jobId).toBe("r.1.sort")
  job!.ack()
  await store.putRegistry({ expert: "sort", adapter: "sort", current: "v1", history: [{ version: "v1", action: "promoted", at: "t" }] })
  expect(await readFeedback(coord, CLUSTER)).toEqual({ items: [], invalid: [], lastSeq: 0 })
  // the console's credential stores a rating (with the console's own writer); the coordinator reads it
  const consoleNc = await as("console")
  await recordFeedback(consoleNc, CLUSTER, { kind: "rating", question: "sort cab", answer: "abc", rating: 1, mode: "moe", expert: "sort", at: "t" })
  expect((await readFeedback(coord, CLUSTER)).items).toEqual([{ kind: "rating", question: "sort cab", answer: "abc", rating: 1, mode: "moe", expert: "sort", at: "t" }])
  await expect(jetstream(consoleNc).publish(`moa.${CLUSTER}.jobs.sort`, "job")).rejects.toThrow(/Permissions Violation for Publish/)

  // expert sort: puts a version it trained, lists and fetches versions, follows its registry entry
  const sort = await as("expert-sort")
  const src = path.join(dir, "trained")
  fs.mkdirSync(src)
  fs.writeFileSync(path.join(src, "adapter_config.json"), '{"r":8}')
  fs.writeFileSync(path.join(src, "adapter_model.safetensors"), "weights")
  expect(await uploadVersion(sort, CLUSTER, "sort", "sort", "v1", src)).toEqual(["sort/sort/v1/adapter_config.json", "sort/sort/v1/adapter_model.safetensors"])
  expect(await storedVersions(sort, CLUSTER, "sort", "sort")).toEqual(["v1"])
  const got = await fetchVersion(sort, CLUSTER, "sort", "sort", "v1", path.join(dir, "hostB", "adapters"), () => undefined)
  expect(fs.readFileSync(path.join(got!, "adapter_model.safetensors"), "utf8")).toBe("weights")
  const seen: RegistryCurrent[] = []
  const follow = followRegistry(sort, CLUSTER, "sort", async (e) => void seen.push(e), () => undefined, 500)
  for (let i = 0; i < 100 && seen.length === 0; i++) await new Promise((r) => setTimeout(r, 100))
  follow.stop()
  expect(seen).toEqual([{ adapter: "sort", current: "v1" }])

  // ... and no more: the registry, a training job, a round event
  const kv = await new Kvm(sort).open(registryBucket(CLUSTER))
  await expect(kv.put("sort", JSON.stringify({ expert: "sort", adapter: "sort", current: "evil", history: [] }))).rejects.toThrow(/Permissions Violation for Publish to "\$KV.moa_adapters_cc.sort"/)
  await expect(jetstream(sort).publish(`moa.${CLUSTER}.jobs.sort`, "self-serve job")).rejects.toThrow(/Permissions Violation for Publish/)
  await expect(jetstream(sort).publish(`moa.${CLUSTER}.rounds.r.1.sort.decided`, "{}")).rejects.toThrow(/Permissions Violation for Publish/)
  expect((await store.registry("sort"))?.current).toBe("v1") // unchanged
  await server.waitForLog(/"v[^"]*:expert-sort" - Publish Violation - Nkey "U[A-Z2-7]+", Subject "\$KV.moa_adapters_cc.sort"/)
}, 120_000)
