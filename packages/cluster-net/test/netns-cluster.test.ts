/**
 * Three test hosts (network namespaces on a bridge), one nats-server each in a cluster with
 * routes and JetStream (R3), NATS clients spread over the hosts. Shows:
 *   1. a request answered across hosts (responder on A, requester on C);
 *   2. one host's responders killed → the queue group's requests go to the other host;
 *   3. one NATS server killed → its clients fail over, and no JetStream message is lost;
 *   4. a partitioned host (cable pulled) is routed around, then rejoins and serves again.
 * Everything (processes, namespaces, stores) is removed in afterAll, and by an exit hook if
 * the test process dies. Skipped (with the reason) only without root or `ip`.
 */
import { execFileSync, type ChildProcess } from "node:child_process"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  createTestNetwork,
  netnsUnavailableReason,
  renderClusterConfigs,
  startServerProcess,
  type ServerProcess,
  type TestHost,
  type TestNetwork,
} from "../src/index.ts"
import { startAgent, type NsAgent } from "./fixtures/driver.ts"

const unavailable = netnsUnavailableReason()
if (unavailable) console.warn(`netns cluster test skipped: ${unavailable}`)

let net: TestNetwork
let dir: string
const servers: Array<ServerProcess | undefined> = []
const configs: Array<string> = []
const agents: Array<NsAgent> = []
const supervisors: Array<ChildProcess> = []
const ROOT = fileURLToPath(new URL("../../../", import.meta.url))
let A: TestHost, B: TestHost, C: TestHost

const url = (h: TestHost) => `nats://${h.ip}:4222`
/** What a client reports as its current server. */
const addr = (h: TestHost) => `${h.ip}:4222`
/** Client server list: its own host's server first, then the others. */
const serversFor = (h: TestHost) => [h, ...net.hosts.filter((x) => x !== h)].map(url)

const startServer = async (i: number) => {
  servers[i] = await startServerProcess({ configFile: configs[i], netns: net.hosts[i].ns, readyTimeoutMs: 20_000 })
}

const agent = async (h: TestHost, name: string) => {
  const a = await startAgent(net, h, name, serversFor(h))
  agents.push(a)
  return a
}

let t0 = Date.now()
/** Progress with elapsed seconds, so a slow CI run shows where the time went. */
const step = (what: string) => console.info(`[netns +${((Date.now() - t0) / 1000).toFixed(1)}s] ${what}`)

/** SIGKILL a process started with `detached: true` and everything in its process group. */
const killGroup = (p: ChildProcess) => {
  try {
    if (p.pid) process.kill(-p.pid, "SIGKILL")
  } catch {
    // gone
  }
}
const pidsIn = (h: TestHost): Set<number> =>
  new Set(execFileSync("ip", ["netns", "pids", h.ns]).toString().split(/\s+/).filter(Boolean).map(Number))

/** `moa up <quickstart> --only <agents> --nats <all three servers>` on a host: the real multi-host path. */
const moaUpOnly = (h: TestHost, only: string) => {
  const cwd = join(dir, `moa-${h.index}`) // its own .moa/run state, as on a separate machine
  mkdirSync(cwd, { recursive: true })
  const p = net.spawn(
    h,
    process.execPath,
    [join(ROOT, "packages/cli/bin/moa.js"), "up", join(ROOT, "examples/quickstart/cluster.ts"), "--only", only, "--nats", serversFor(h).join(",")],
    { cwd, stdio: ["ignore", "ignore", "ignore"], detached: true },
  )
  supervisors.push(p)
  return p
}

type Answer = { tag: string; attempt: number; server: string }

describe.skipIf(unavailable !== undefined)("moa on three hosts (network namespaces)", () => {
  beforeAll(async () => {
    // tcp_retries2=3 (inside the test namespaces only): nats-server 2.9 keeps a route to an
    // unplugged host open while it has traffic for it (JetStream heartbeats always are), until
    // TCP gives up retransmitting — ~15 min by default, a few seconds with this.
    net = createTestNetwork({ hosts: 3, tcpRetries2: 3 })
    ;[A, B, C] = net.hosts
    dir = mkdtempSync(join(tmpdir(), "moa-netns-"))
    const rendered = renderClusterConfigs({
      clusterName: "moa-test",
      nodes: net.hosts.map((h) => ({ name: `nats-${"abc"[h.index]}`, address: h.ip })),
      storeDir: (n) => join(dir, n.name, "js"),
      // Fast failure detection so the test runs in seconds: a dead route/client is noticed in ~3 s.
      pingIntervalSeconds: 1,
      pingMax: 3,
      writeDeadlineSeconds: 2,
      maxMemory: "64MB",
      maxFile: "256MB",
    })
    for (const { node, config } of rendered) {
      mkdirSync(join(dir, node.name), { recursive: true })
      const f = join(dir, node.name, "nats.conf")
      writeFileSync(f, config)
      configs.push(f)
    }
    await Promise.all(net.hosts.map((_, i) => startServer(i)))
  }, 60_000)

  afterAll(async () => {
    for (const a of agents) a.kill()
    for (const p of supervisors) killGroup(p)
    for (const s of servers) await s?.kill("SIGKILL").catch(() => undefined)
    net?.destroy()
    if (dir) rmSync(dir, { recursive: true, force: true })
  }, 120_000)

  it("answers a request across hosts: responder on A, requester on C", async () => {
    const respA = await agent(A, "resp-a")
    await respA.call("serve", { subjects: ["moa.net.echo.generate"], queue: "q", tag: "A" })
    await respA.call("serve", { subjects: ["moa.net.a-only.ping"], tag: "A" })
    const reqC = await agent(C, "req-c")
    expect(await reqC.call("server")).toBe(addr(C))
    const r = await reqC.call<Answer>("request", { subject: "moa.net.echo.generate", attempts: 20, timeout: 1000 })
    expect(r.tag).toBe("A")
    expect(r.server).toBe(addr(A)) // answered by a process on host A, through its own server
  }, 120_000)

  it("sends queue-group requests to the other host when one host's responders are killed", async () => {
    const [respA, reqC] = agents
    const respB = await agent(B, "resp-b")
    await respB.call("serve", { subjects: ["moa.net.echo.generate"], queue: "q", tag: "B" })
    // both hosts serve the group now
    const before = new Set<string>()
    for (let i = 0; i < 40 && before.size < 2; i++) before.add((await reqC.call<Answer>("request", { subject: "moa.net.echo.generate", attempts: 5 })).tag)
    expect(before).toEqual(new Set(["A", "B"]))
    respA.kill()
    const after: Array<string> = []
    for (let i = 0; i < 20; i++) after.push((await reqC.call<Answer>("request", { subject: "moa.net.echo.generate", attempts: 10, timeout: 1000 })).tag)
    expect(after).toEqual(Array(20).fill("B"))
  }, 120_000)

  /**
   * The JOBS stream as one host reads it, read again until it holds `n` messages (or `withinMs`
   * passed): right after a failover or a rejoin the stream's new leader can answer before it has
   * caught up (reads of 50 of 100 were seen in CI through the restarted server B), and a meta-group election
   * can answer "JetStream system temporarily unavailable" for a while.
   */
  const readJobs = async (a: NsAgent, n: number, withinMs = 30_000) => {
    const deadline = Date.now() + withinMs
    for (;;) {
      const r = await a.call<{ messages: number; data: Array<string> }>("readAll", { stream: "JOBS", withinMs }, withinMs + 10_000)
      // the count comes from the stream's info, the data from one MSG.GET per sequence: a leader
      // still catching up has answered "no message found" for a few of them (CI: 107 of 110)
      if ((r.messages >= n && r.data.length >= n) || Date.now() > deadline) return r
      await new Promise((res) => setTimeout(res, 500))
    }
  }

  it("loses no JetStream message when a NATS server is killed; its clients fail over", async () => {
    const reqC = agents[1]
    const respB = agents[2]
    const pubB = await agent(B, "pub-b") // connected to server B, the one that will die
    expect(await pubB.call("server")).toBe(addr(B))
    const s = await pubB.call<{ replicas: number }>("addStream", { name: "JOBS", subjects: ["moa.net.jobs.>"], replicas: 3 })
    expect(s.replicas).toBe(3)
    await pubB.call("publish", { subject: "moa.net.jobs.geo", prefix: "job", from: 0, count: 50 })

    await servers[1]!.kill("SIGKILL") // server B dies hard
    const p = await pubB.call<{ retries: number }>("publish", { subject: "moa.net.jobs.geo", prefix: "job", from: 50, count: 50, withinMs: 45_000 })
    const now = await pubB.call<string>("server")
    expect(now).not.toBe(addr(B)) // the publisher failed over to A or C
    expect([addr(A), addr(C)]).toContain(now)

    const all = await readJobs(reqC, 100)
    expect(all.messages).toBe(100) // nothing lost, nothing duplicated (retries carry a Nats-Msg-Id)
    expect(all.data).toEqual(Array.from({ length: 100 }, (_, i) => `job-${i}`))
    expect(p.retries).toBeGreaterThanOrEqual(0)

    // the responder on host B lost its server too, reconnected elsewhere and answers again
    const r = await reqC.call<Answer>("request", { subject: "moa.net.echo.generate", attempts: 30, timeout: 1000 })
    expect(r.tag).toBe("B")
    expect(r.server).not.toBe(addr(B))
    expect(respB.events.some((e) => e.type === "reconnect")).toBe(true)

    // server B comes back with its store, rejoins and catches up
    await startServer(1)
    const readerB = await agent(B, "reader-b")
    expect(await readerB.call("server")).toBe(addr(B))
    const again = await readJobs(readerB, 100) // catching up takes a moment after the restart
    expect(again.messages).toBe(100)
  }, 120_000)

  it("routes around a partitioned host, which rejoins and serves again when its link is back", async () => {
    const reqC = agents[1]
    const respA2 = await agent(A, "resp-a2")
    await respA2.call("serve", { subjects: ["moa.net.echo.generate"], queue: "q", tag: "A2" })
    await respA2.call("serve", { subjects: ["moa.net.a2-only.ping"], tag: "A2" })
    expect((await reqC.call<Answer>("request", { subject: "moa.net.a2-only.ping", attempts: 20 })).tag).toBe("A2")

    t0 = Date.now()
    const since = [servers[1]!.mark(), servers[2]!.mark()]
    net.linkDown(A) // pull host A's cable
    step("host A link down")
    // B and C notice: their routes to A close
    const routeToAClosed = /10\.77\.0\.1:\d+ - rid:\d+ - Router connection closed/
    await Promise.all([servers[1]!.waitForLog(routeToAClosed, 60_000, since[0]), servers[2]!.waitForLog(routeToAClosed, 60_000, since[1])])
    step("routes to A closed on B and C")
    // host A is unreachable from C...
    await expect(reqC.call("request", { subject: "moa.net.a2-only.ping", attempts: 3, timeout: 500 })).rejects.toThrow(/no answer|no responders/)
    step("A unreachable from C")
    const during: Array<string> = []
    for (let i = 0; i < 10; i++) during.push((await reqC.call<Answer>("request", { subject: "moa.net.echo.generate", attempts: 20, timeout: 1000 })).tag)
    expect(during).toEqual(Array(10).fill("B"))
    step("queue group served by B alone")
    // JetStream keeps its quorum (B + C) and takes writes while A is cut off
    await reqC.call("publish", { subject: "moa.net.jobs.geo", prefix: "job", from: 100, count: 10, withinMs: 45_000 })

    step("JetStream took writes during the partition")
    net.linkUp(A) // plug it back in: routes re-form, host A serves again
    const back = await reqC.call<Answer>("request", { subject: "moa.net.a2-only.ping", attempts: 60, timeout: 1000, pause: 500 })
    expect(back.tag).toBe("A2")
    step(`host A serves again (attempt ${back.attempt})`)
    // after the rejoin the JetStream meta group may re-elect; on a loaded machine that took more
    // than the default 20 s once ("JetStream system temporarily unavailable"), so allow 45 s
    const all = await readJobs(reqC, 110, 45_000)
    expect(all.messages).toBe(110)
    expect(all.data).toEqual(Array.from({ length: 110 }, (_, i) => `job-${i}`))
  }, 120_000)

  it("runs moa's own agents with `moa up --only` on two hosts; killing one host's agents moves queries to the other", async () => {
    const reqC = agents[1]
    t0 = Date.now()
    const upA = moaUpOnly(A, "upper")
    moaUpOnly(B, "upper")
    type Info = { reply: { pid: number; agent: string }; attempt: number }
    const call = () => reqC.call<Info>("agentCall", { cluster: "quickstart", agent: "upper", verb: "info", request: {}, attempts: 90, timeout: 2000, pause: 500 }, 230_000)
    // both hosts' replicas answer (the queue group spans hosts)
    const hostOf = (pid: number) => (pidsIn(A).has(pid) ? "A" : pidsIn(B).has(pid) ? "B" : `? (${pid})`)
    const seen = new Set<string>()
    for (let i = 0; i < 200 && seen.size < 2; i++) seen.add(hostOf((await call()).reply.pid))
    expect(seen).toEqual(new Set(["A", "B"]))
    const g = await reqC.call<{ reply: { text: string } }>("agentCall", { cluster: "quickstart", agent: "upper", verb: "generate", request: { prompt: "across hosts" }, attempts: 10 })
    expect(g.reply.text).toBe("ACROSS HOSTS")
    step("moa agents on A and B both answer from C")
    killGroup(upA) // host A's supervisor and its agent die at once
    const after: Array<string> = []
    for (let i = 0; i < 10; i++) after.push(hostOf((await call()).reply.pid))
    expect(after).toEqual(Array(10).fill("B"))
    step("host A's agents killed: all queries answered on B")
  }, 240_000) // `moa up` start-up (tsx, cluster file, agents) is slow on a loaded 2-core machine
})
