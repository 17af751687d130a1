/**
 * moa's own agents (the runtime's `startAgent`, quickstart cluster) under `moa auth init`
 * credentials and mutual TLS: everything they do at start-up, while serving and at shutdown fits
 * their role's permissions (the server logs no violation for them), the console reaches the
 * experts only through the router, and calling an expert directly is refused.
 */
import { makeClient, startAgent } from "@moa/runtime"
import { freePort } from "@moa/bus/testing"
import type { NatsConnection } from "@nats-io/nats-core"
import { connect } from "@nats-io/transport-node"
import { Effect, Exit, Scope } from "effect"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { authInit, busAuthFromEnv, natsAuthFromEnv, startServerProcess, type AuthInitResult, type ServerProcess } from "../src/index.ts"

const CLUSTER_FILE = fileURLToPath(new URL("../../../examples/quickstart/cluster.ts", import.meta.url))
let dir: string
let auth: AuthInitResult
let server: ServerProcess
let url: string
let consoleNc: NatsConnection | undefined
const scope = Effect.runSync(Scope.make())

/** The MOA_NATS_* variables of a credential, as an agent process would get them. */
const envOf = (user: string): Record<string, string> => {
  const c = auth.credentials.find((x) => x.user === user)!
  return Object.fromEntries(
    readFileSync(c.envFile, "utf8")
      .split("\n")
      .filter((l) => l && !l.startsWith("#"))
      .map((l) => l.split("=") as [string, string]),
  )
}

const runAgent = (agent: string, user: string) =>
  Effect.runPromise(Scope.extend(startAgent({ cluster: CLUSTER_FILE, agent, nats: { servers: url, maxReconnectAttempts: 0, ...busAuthFromEnv(envOf(user)) }, drainTimeoutMs: 2000 }), scope))

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "moa-agents-auth-"))
  auth = authInit({ out: join(dir, "auth"), cluster: "quickstart", experts: ["echo", "upper", "calc"], router: "router", coordinator: "coach" })
  const port = await freePort()
  url = `tls://127.0.0.1:${port}`
  const conf = join(dir, "server.conf")
  writeFileSync(conf, `listen: "127.0.0.1:${port}"\nserver_name: "agents-auth"\njetstream { store_dir: ${JSON.stringify(join(dir, "js"))} }\ninclude "auth/auth.conf"\ninclude "auth/tls.conf"\n`)
  server = await startServerProcess({ configFile: conf })
}, 60_000)

afterAll(async () => {
  await consoleNc?.close().catch(() => undefined)
  await Effect.runPromise(Scope.close(scope, Exit.void))
  await server?.kill()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

describe("quickstart agents with per-role credentials", () => {
  it("serve, discover and answer through the router without a single permission violation", async () => {
    await runAgent("upper", "expert-upper")
    await runAgent("echo", "expert-echo")
    await runAgent("router", "router")
    consoleNc = await connect({ servers: url, ...natsAuthFromEnv(envOf("console")), maxReconnectAttempts: 0 })
    const client = makeClient(consoleNc, "quickstart")
    const r = await client.call("router", "generate", { prompt: "shout across roles" }, { timeoutMs: 10_000 })
    expect(r.text).toBe("ACROSS ROLES")
    const e = await client.call("router", "generate", { prompt: "hello" }, { timeoutMs: 10_000 })
    expect(e.text).toContain("hello")
    expect(server.log()).not.toMatch(/Violation/)
  })

  it("refuses the console calling an expert directly, and logs it", async () => {
    const client = makeClient(consoleNc!, "quickstart")
    await expect(client.call("upper", "generate", { prompt: "sneak" }, { timeoutMs: 3000 })).rejects.toThrow()
    await server.waitForLog(/:console" - Publish Violation - Nkey "U[A-Z2-7]+", Subject "moa.quickstart.upper.generate"/)
  })
})
