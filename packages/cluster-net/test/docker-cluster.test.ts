/**
 * The compose file's NATS cluster, really running: docker/nats/nats-{1,2,3}.conf (rendered with
 * this machine's paths for the auth folder and stores) on three test hosts named nats-1..3,
 * with the auth folder `moa auth init` writes for compose. The routes form over mutual TLS with
 * hostname verification, JetStream replicates, and clients with their credentials reach each
 * other across hosts by name. (No Docker engine here: the nats-server binary stands in for the
 * nats:2.9.10 image.)
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  authInit,
  createTestNetwork,
  DOCKER_NATS_NODES,
  netnsUnavailableReason,
  renderDockerNatsConfigs,
  startServerProcess,
  type AuthInitResult,
  type NatsCredential,
  type ServerProcess,
  type TestNetwork,
} from "../src/index.ts"
import { startAgent, type NsAgent } from "./fixtures/driver.ts"

const unavailable = netnsUnavailableReason()
if (unavailable) console.warn(`docker cluster test skipped: ${unavailable}`)

let net: TestNetwork
let dir: string
let auth: AuthInitResult
const servers: Array<ServerProcess> = []
const agents: Array<NsAgent> = []
const URLS = DOCKER_NATS_NODES.map((n) => `tls://${n}:4222`)

const credential = (user: string): NatsCredential => {
  const c = auth.credentials.find((x) => x.user === user)!
  return { user, seedFile: c.seedFile, inboxPrefix: c.inboxPrefix, caFile: auth.caFile, certFile: c.certFile, keyFile: c.keyFile }
}

describe.skipIf(unavailable !== undefined)("docker/nats configs on three hosts named nats-1..3", () => {
  beforeAll(async () => {
    net = createTestNetwork({ hosts: 3, subnet: "10.78.0", hostnames: [...DOCKER_NATS_NODES] })
    dir = mkdtempSync(join(tmpdir(), "moa-docker-cluster-"))
    // what compose.yaml's header says to run, except that the servers see the folder where it is
    auth = authInit({
      out: join(dir, "auth"),
      cluster: "quickstart",
      experts: ["echo", "upper", "calc"],
      router: "router",
      coordinator: "coach",
      dnsNames: [...DOCKER_NATS_NODES],
    })
    const configs = renderDockerNatsConfigs(auth.out, (n) => join(dir, "data", n))
    await Promise.all(
      configs.map(async ({ file, text }, i) => {
        mkdirSync(join(dir, "data", DOCKER_NATS_NODES[i]), { recursive: true })
        writeFileSync(join(dir, file), text) // next to auth/, as in /etc/nats
        servers[i] = await startServerProcess({ configFile: join(dir, file), netns: net.hosts[i].ns, readyTimeoutMs: 20_000 })
      }),
    )
  }, 60_000)

  afterAll(async () => {
    for (const a of agents) a.kill()
    for (const s of servers) await s?.kill("SIGKILL").catch(() => undefined)
    net?.destroy()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  it("forms TLS routes by name, replicates JetStream, and carries requests between credentials", async () => {
    // routes dialled by name (nats-N resolves through the hosts' /etc/hosts) over mutual TLS
    for (const s of servers) await s.waitForLog(/10\.78\.0\.\d:6222 - rid:\d+ - Route connection created/, 20_000)
    for (const s of servers) expect(s.log()).toMatch(/TLS required for client connections/)
    const admin = await startAgent(net, net.hosts[2], "admin", [URLS[2], URLS[0], URLS[1]], credential("admin"))
    agents.push(admin)
    const st = await admin.call<{ replicas: number }>("addStream", { name: "moa-quickstart-jobs", subjects: ["moa.quickstart.jobs.>"], replicas: 3 })
    expect(st.replicas).toBe(3)
    // the router credential serves on host nats-1, the console asks from host nats-3
    const router = await startAgent(net, net.hosts[0], "router", [URLS[0], URLS[1], URLS[2]], credential("router"))
    agents.push(router)
    await router.call("serve", { subjects: ["moa.quickstart.router.generate"], queue: "q", tag: "router@nats-1" })
    const consoleAgent = await startAgent(net, net.hosts[2], "console", [URLS[2], URLS[0], URLS[1]], credential("console"))
    agents.push(consoleAgent)
    const r = await consoleAgent.call<{ tag: string; server: string }>("request", { subject: "moa.quickstart.router.generate", attempts: 20 })
    expect(r.tag).toBe("router@nats-1")
    expect(r.server).toBe("nats-1:4222")
    // and the console is still only allowed to ask the router
    await expect(consoleAgent.call("request", { subject: "moa.quickstart.upper.generate", attempts: 1, timeout: 1000 })).rejects.toThrow(/Permissions Violation/)
    await servers[2].waitForLog(/:console" - Publish Violation - Nkey "U[A-Z2-7]+", Subject "moa.quickstart.upper.generate"/)
  }, 120_000)
})
