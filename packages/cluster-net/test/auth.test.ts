/**
 * `moa auth init` output against a real nats-server 2.9: TLS (mutual) + nkey users with
 * per-role permissions. Allowed paths work; forbidden ones are refused with a permission
 * violation the client sees and the server logs, naming the credential.
 */
import { freePort } from "@moa/bus/testing"
import { AckPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream"
import { Kvm } from "@nats-io/kv"
import type { NatsConnection } from "@nats-io/nats-core"
import { Objm } from "@nats-io/obj"
import { Svcm } from "@nats-io/services"
import { connect } from "@nats-io/transport-node"
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { connect as tcpConnect } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { authInit, natsAuthOptions, startServerProcess, type AuthInitResult, type ServerProcess } from "../src/index.ts"

let dir: string
let auth: AuthInitResult
let server: ServerProcess
let url: string
let port: number
const conns: Array<NatsConnection> = []

const cred = (user: string) => {
  const c = auth.credentials.find((x) => x.user === user)
  if (!c) throw new Error(`no credential ${user}`)
  return natsAuthOptions({ user: c.user, seedFile: c.seedFile, inboxPrefix: c.inboxPrefix, caFile: auth.caFile, certFile: c.certFile, keyFile: c.keyFile })
}

/** Connect as a credential, collecting the permission errors the client is told about. */
const as = async (user: string) => {
  const nc = await connect({ servers: url, ...cred(user), maxReconnectAttempts: 0 })
  conns.push(nc)
  const errors: Array<string> = []
  void (async () => {
    for await (const s of nc.status()) if (s.type === "error") errors.push(String((s as { error?: Error }).error?.message))
  })()
  return { nc, errors }
}

const waitFor = async (what: string, ok: () => boolean, ms = 5000) => {
  const end = Date.now() + ms
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

const te = new TextEncoder()
const td = new TextDecoder()

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "moa-auth-test-"))
  auth = authInit({ out: join(dir, "auth"), cluster: "t", experts: ["geo", "math"], router: "router", coordinator: "coord" })
  port = await freePort()
  url = `tls://127.0.0.1:${port}`
  // A test-local server config that includes the generated auth.conf and tls.conf as-is.
  const conf = join(dir, "server.conf")
  writeFileSync(conf, `listen: "127.0.0.1:${port}"\nserver_name: "auth-test"\njetstream { store_dir: ${JSON.stringify(join(dir, "js"))} }\ninclude "auth/auth.conf"\ninclude "auth/tls.conf"\n`)
  server = await startServerProcess({ configFile: conf })
})

afterAll(async () => {
  for (const nc of conns) await nc.close().catch(() => undefined)
  await server?.kill()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

describe("moa auth init output", () => {
  it("writes secrets private, a manifest, and one env file per credential", () => {
    const users = auth.credentials.map((c) => c.user).sort()
    expect(users).toEqual(["admin", "console", "coordinator-coord", "expert-geo", "expert-math", "router"])
    for (const c of auth.credentials) {
      expect(statSync(c.seedFile).mode & 0o077).toBe(0)
      expect(readFileSync(c.seedFile, "utf8")).toMatch(/^SU[A-Z2-7]{56}\n$/)
      expect(readFileSync(c.envFile, "utf8")).toContain(`MOA_NATS_INBOX_PREFIX=_INBOX_${c.user}`)
      expect(statSync(c.keyFile!).mode & 0o077).toBe(0)
    }
    const conf = readFileSync(auth.authConf, "utf8")
    for (const c of auth.credentials) expect(conf).toContain(c.publicKey)
    expect(conf).not.toMatch(/SU[A-Z2-7]{56}/) // no seed ever lands in the server config
    expect(JSON.parse(readFileSync(auth.manifest, "utf8")).credentials).toHaveLength(6)
    expect(() => authInit({ out: join(dir, "auth"), cluster: "t", experts: ["geo"], router: "r", coordinator: "c" })).toThrow(/not empty/)
    expect(() => authInit({ out: join(dir, "bad"), cluster: "t", experts: ["a.b"], router: "r", coordinator: "c" })).toThrow(/expert name "a.b" may only contain/)
    expect(() => authInit({ out: join(dir, "bad2"), cluster: "t", experts: ["r"], router: "r", coordinator: "c" })).toThrow(/used twice/)
  })

  it("lets every role do its job: jobs, registry, objects, requests, events, $SRV discovery", async () => {
    // coordinator: creates the cluster's streams and buckets, writes the registry, sends a job
    const { nc: coord } = await as("coordinator-coord")
    const jsm = await jetstreamManager(coord)
    await jsm.streams.add({ name: "MOA_JOBS_t", subjects: ["moa.t.jobs.>"] })
    await jsm.streams.add({ name: "moa-t-events", subjects: ["moa.t.events.>"] })
    const kv = await new Kvm(coord).create("moa_t_registry")
    await kv.put("t.geo.adapter", "geo-v1")
    const objs = await new Objm(coord).create("moa_t_artifacts")
    await objs.putBlob({ name: "adapters/geo/v1.bin" }, new Uint8Array([1, 2, 3, 4]))
    await jsm.consumers.add("MOA_JOBS_t", { durable_name: "geo", filter_subject: "moa.t.jobs.geo", ack_policy: AckPolicy.Explicit })
    await jetstream(coord).publish("moa.t.jobs.geo", te.encode("train geo on batch 1"))

    // expert geo: a NATS service on its own subject, reading registry + objects, pulling its job
    const { nc: geo, errors: geoErrors } = await as("expert-geo")
    const svc = await new Svcm(geo).add({ name: "geo", version: "0.1.0", metadata: { cluster: "t", role: "expert" } })
    svc.addEndpoint("generate", { subject: "moa.t.geo.generate", handler: (_e, m) => m.respond(te.encode(`geo says: ${td.decode(m.data)}`)) })
    const gkv = await new Kvm(geo).open("moa_t_registry")
    expect((await gkv.get("t.geo.adapter"))?.string()).toBe("geo-v1")
    const gobj = await new Objm(geo).open("moa_t_artifacts")
    expect([...((await gobj.getBlob("adapters/geo/v1.bin")) ?? [])]).toEqual([1, 2, 3, 4])
    await gobj.putBlob({ name: "adapters/geo/v2.bin" }, new Uint8Array([5, 6])) // trained adapters go to the Object Store
    const consumer = await jetstream(geo).consumers.get("MOA_JOBS_t", "geo")
    const job = await consumer.next({ expires: 2000 })
    expect(job && td.decode(job.data)).toBe("train geo on batch 1")
    await job!.ackAck()

    // router: serves the cluster's entry point and calls the expert
    const { nc: router } = await as("router")
    const rsvc = await new Svcm(router).add({ name: "router", version: "0.1.0" })
    rsvc.addEndpoint("ask", {
      subject: "moa.t.router.ask",
      handler: async (_e, m) => {
        const r = await router.request("moa.t.geo.generate", m.data, { timeout: 3000 })
        m.respond(r.data)
      },
    })
    await router.flush()

    // console: asks the router, watches events, discovers services
    const { nc: consoleNc } = await as("console")
    const events = consoleNc.subscribe("moa.t.events.>", { max: 1 })
    await consoleNc.flush()
    const answer = await consoleNc.request("moa.t.router.ask", te.encode("capital of France"), { timeout: 5000 })
    expect(td.decode(answer.data)).toBe("geo says: capital of France")
    geo.publish("moa.t.events.trained", te.encode("geo v2"))
    for await (const m of events) expect(td.decode(m.data)).toBe("geo v2")
    const names: Array<string> = []
    for await (const s of await new Svcm(consoleNc).client({ maxWait: 1000, strategy: "timer" }).ping()) names.push(s.name)
    expect(names.sort()).toEqual(["geo", "router"])
    expect(geoErrors).toEqual([])
  })

  it("refuses an expert publishing training jobs, reading other agents' subjects or writing the registry — and logs it", async () => {
    const { nc: geo, errors } = await as("expert-geo")
    // 1. publishing a training job (for another expert, or for itself)
    await expect(jetstream(geo).publish("moa.t.jobs.math", te.encode("evil job"))).rejects.toThrow(/Permissions Violation for Publish to "moa.t.jobs.math"/)
    await expect(jetstream(geo).publish("moa.t.jobs.geo", te.encode("self-serve job"))).rejects.toThrow(/Permissions Violation for Publish/)
    // 2. reading another agent's subjects, or everybody's replies
    const sub = geo.subscribe("moa.t.math.generate")
    expect(String(await sub.closed)).toMatch(/Permissions Violation for Subscription to "moa.t.math.generate"/)
    const snoop = geo.subscribe("_INBOX.>")
    expect(String(await snoop.closed)).toMatch(/Permissions Violation for Subscription to "_INBOX.>"/)
    const snoopRouter = geo.subscribe("_INBOX_router.>")
    expect(String(await snoopRouter.closed)).toMatch(/Permissions Violation for Subscription/)
    // ... or calling another expert, or pulling another expert's jobs
    await expect(geo.request("moa.t.math.generate", te.encode("hi"), { timeout: 2000 })).rejects.toThrow(/Permissions Violation for Publish to "moa.t.math.generate"/)
    await expect(jetstreamManager(geo).then((m) => m.consumers.add("MOA_JOBS_t", { name: "steal", filter_subject: "moa.t.jobs.math" }))).rejects.toThrow(/Permissions Violation/)
    // 3. writing the registry
    const kv = await new Kvm(geo).open("moa_t_registry")
    await expect(kv.put("t.geo.adapter", "geo-evil")).rejects.toThrow(/Permissions Violation for Publish to "\$KV.moa_t_registry.t.geo.adapter"/)
    await expect(kv.delete("t.geo.adapter")).rejects.toThrow(/Permissions Violation/)
    expect((await kv.get("t.geo.adapter"))?.string()).toBe("geo-v1") // unchanged

    await waitFor("client-side permission errors", () => errors.length >= 8)
    expect(errors.every((e) => /Permissions Violation/.test(e))).toBe(true)
    // the server names the credential (connection name) and the subject
    await server.waitForLog(/"v[^"]*:expert-geo" - Publish Violation - Nkey "U[A-Z2-7]+", Subject "moa.t.jobs.math"/)
    await server.waitForLog(/"v[^"]*:expert-geo" - Subscription Violation - Nkey "U[A-Z2-7]+", Subject "moa.t.math.generate"/)
    await server.waitForLog(/"v[^"]*:expert-geo" - Publish Violation - Nkey "U[A-Z2-7]+", Subject "\$KV.moa_t_registry.t.geo.adapter"/)
  })

  it("keeps the router off training and the console off everything but the router", async () => {
    const { nc: router } = await as("router")
    await expect(jetstream(router).publish("moa.t.jobs.geo", te.encode("x"))).rejects.toThrow(/Permissions Violation/)
    await expect(router.request("moa.t.geo.train", te.encode("x"), { timeout: 2000 })).rejects.toThrow(/Permissions Violation for Publish to "moa.t.geo.train"/)
    const { nc: consoleNc } = await as("console")
    await expect(consoleNc.request("moa.t.geo.generate", te.encode("x"), { timeout: 2000 })).rejects.toThrow(/Permissions Violation for Publish to "moa.t.geo.generate"/)
    await expect(new Kvm(consoleNc).open("moa_t_registry").then((b) => b.get("t.geo.adapter"))).rejects.toThrow(/Permissions Violation/)
    await server.waitForLog(/"v[^"]*:console" - Publish Violation - Nkey "U[A-Z2-7]+", Subject "moa.t.geo.generate"/)
  })

  it("requires TLS with a client certificate from the CA, and a known nkey", async () => {
    const c = cred("expert-geo")
    // plaintext: the server announces tls_required and never answers a plaintext CONNECT/PING
    const plain = await new Promise<{ info: string; rest: string }>((resolve, reject) => {
      const s = tcpConnect({ host: "127.0.0.1", port })
      let buf = ""
      let sent = false
      s.on("data", (d) => {
        buf += d.toString("latin1")
        if (!sent && buf.includes("\r\n")) {
          sent = true
          s.write('CONNECT {"verbose":false,"pedantic":false,"tls_required":false}\r\nPING\r\n')
        }
      })
      s.on("close", () => {
        const i = buf.indexOf("\r\n")
        resolve({ info: buf.slice(0, i), rest: buf.slice(i + 2) })
      })
      s.on("error", reject)
      setTimeout(() => s.destroy(), 8000)
    })
    expect(plain.info).toMatch(/^INFO .*"tls_required":true/)
    expect(plain.rest).not.toContain("PONG")
    await server.waitForLog(/TLS handshake error/)
    // nats.js without our CA: the self-signed chain is not trusted
    await expect(connect({ servers: url, authenticator: c.authenticator, maxReconnectAttempts: 0, timeout: 3000 })).rejects.toThrow()
    // CA but no client certificate: mutual TLS refuses it
    await expect(connect({ servers: url, authenticator: c.authenticator, tls: { ca: c.tls!.ca }, maxReconnectAttempts: 0, timeout: 3000 })).rejects.toThrow()
    // TLS fine but an nkey the server does not know
    const stranger = authInit({ out: join(dir, "stranger"), cluster: "t", experts: ["geo"], router: "r", coordinator: "c", tls: false })
    const s = natsAuthOptions({ seedFile: stranger.credentials[0].seedFile })
    await expect(connect({ servers: url, authenticator: s.authenticator, tls: c.tls, maxReconnectAttempts: 0, timeout: 3000 })).rejects.toThrow(/Authorization Violation/i)
    // and the full credential connects
    const ok = await connect({ servers: url, ...c, maxReconnectAttempts: 0 })
    expect(ok.info?.tls_required).toBe(true)
    await ok.close()
  })
})
