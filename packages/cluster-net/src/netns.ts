/**
 * Test hosts on one Linux machine: network namespaces joined by veth pairs to a bridge that
 * itself lives in a namespace of its own, so nothing of the host's network is touched — every
 * interface is created inside a namespace made here and disappears with it.
 *
 *   ns <id>-br:  br0 ── vh0 ─┐  ┌─ vh1 ──  …
 *                            │  │
 *   ns <id>-h0:        eth0 10.77.0.1/24     ns <id>-h1: eth0 10.77.0.2/24   …
 *
 * Needs root and `ip` (Debian's iproute2). Namespaces are named `moa<pid>x<rand>-…`;
 * `destroy()` kills every process still inside them and deletes them, and a process-exit hook
 * does the same if a test dies first. Leftovers of dead test processes are swept on create.
 */
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from "node:child_process"
import { mkdirSync, rmSync, writeFileSync } from "node:fs"

export interface TestHost {
  readonly index: number
  /** Network namespace name. */
  readonly ns: string
  /** The host's address on the test network. */
  readonly ip: string
}

export interface TestNetwork {
  readonly id: string
  readonly bridgeNs: string
  readonly hosts: ReadonlyArray<TestHost>
  /** Start a command inside a host's namespace (`ip netns exec`); the pid is the command's own. */
  readonly spawn: (host: TestHost, cmd: string, args: ReadonlyArray<string>, opts?: SpawnOptions) => ChildProcess
  /** Unplug a host's cable (its port on the bridge goes down) / plug it back in. */
  readonly linkDown: (host: TestHost) => void
  readonly linkUp: (host: TestHost) => void
  /** Kill everything in the namespaces and delete them. Idempotent. */
  readonly destroy: () => void
}

const ip = (args: ReadonlyArray<string>): string => {
  try {
    return execFileSync("ip", args as Array<string>, { stdio: ["ignore", "pipe", "pipe"] }).toString()
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string }
    throw new Error(`ip ${args.join(" ")} failed: ${err.stderr?.toString().trim() || err.message}`)
  }
}

/** Why namespaces cannot be made here, or undefined when they can. */
export const netnsUnavailableReason = (): string | undefined => {
  if (process.platform !== "linux") return `network namespaces need Linux (this is ${process.platform})`
  if (typeof process.getuid === "function" && process.getuid() !== 0) return "network-namespace test hosts need root (CI runs as root)"
  try {
    execFileSync("ip", ["-V"], { stdio: "pipe" })
  } catch {
    return "the `ip` command is missing (Debian: apt-get install -y iproute2)"
  }
  return undefined
}

const NAME_RE = /^moa(\d+)x[0-9a-z]+-(br|h\d+)$/

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

const killAllIn = (ns: string) => {
  let pids: Array<number> = []
  try {
    pids = ip(["netns", "pids", ns]).split(/\s+/).filter(Boolean).map(Number)
  } catch {
    return
  }
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL")
    } catch {
      // gone already
    }
  }
}

const deleteNs = (ns: string) => {
  killAllIn(ns)
  try {
    ip(["netns", "del", ns])
  } catch {
    // already gone
  }
  rmSync(`/etc/netns/${ns}`, { recursive: true, force: true })
}

/** Delete namespaces left behind by test processes that no longer exist. */
export const sweepStaleNamespaces = (): Array<string> => {
  const swept: Array<string> = []
  let names: Array<string> = []
  try {
    names = ip(["netns", "list"]).split("\n").map((l) => l.split(" ")[0]).filter(Boolean)
  } catch {
    return swept
  }
  for (const n of names) {
    const m = NAME_RE.exec(n)
    if (m && Number(m[1]) !== process.pid && !alive(Number(m[1]))) {
      deleteNs(n)
      swept.push(n)
    }
  }
  return swept
}

const live = new Set<TestNetwork>()
let exitHooked = false

export interface TestNetworkOptions {
  readonly hosts: number
  /** First three octets of the test subnet (default "10.77.0"); only ever inside the namespaces. */
  readonly subnet?: string
  /**
   * `net.ipv4.tcp_retries2` inside each host namespace (kernel default 15, ~15 minutes). A
   * route to a host whose cable was pulled is only closed when TCP gives up retransmitting;
   * 3 makes that a few seconds. Only the namespaces made here are changed.
   */
  readonly tcpRetries2?: number
  /**
   * Host names, one per host: every host's /etc/hosts (through `ip netns exec`'s bind mount of
   * /etc/netns/<ns>/hosts) maps all of them to their addresses, so configs can use names.
   */
  readonly hostnames?: ReadonlyArray<string>
}

export const createTestNetwork = (o: TestNetworkOptions): TestNetwork => {
  const reason = netnsUnavailableReason()
  if (reason) throw new Error(reason)
  if (!Number.isInteger(o.hosts) || o.hosts < 1 || o.hosts > 200) throw new Error("createTestNetwork: hosts must be 1..200")
  const subnet = o.subnet ?? "10.77.0"
  if (!/^\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(subnet)) throw new Error(`createTestNetwork: subnet ${JSON.stringify(subnet)} must look like "10.77.0"`)
  sweepStaleNamespaces()
  const id = `moa${process.pid}x${Math.random().toString(36).slice(2, 6)}`
  const bridgeNs = `${id}-br`
  const created: Array<string> = []
  const hosts: Array<TestHost> = []
  let destroyed = false
  const destroy = () => {
    if (destroyed) return
    destroyed = true
    for (const ns of [...created].reverse()) deleteNs(ns)
    live.delete(net)
  }
  const net: TestNetwork = {
    id,
    bridgeNs,
    hosts,
    spawn: (host, cmd, args, opts = {}) => spawn("ip", ["netns", "exec", host.ns, cmd, ...args], opts),
    linkDown: (host) => void ip(["-n", bridgeNs, "link", "set", `vh${host.index}`, "down"]),
    linkUp: (host) => void ip(["-n", bridgeNs, "link", "set", `vh${host.index}`, "up"]),
    destroy,
  }
  live.add(net)
  if (!exitHooked) {
    exitHooked = true
    process.once("exit", () => {
      for (const n of live) n.destroy()
    })
  }
  try {
    ip(["netns", "add", bridgeNs])
    created.push(bridgeNs)
    ip(["-n", bridgeNs, "link", "set", "lo", "up"])
    ip(["-n", bridgeNs, "link", "add", "br0", "type", "bridge"])
    ip(["-n", bridgeNs, "link", "set", "br0", "up"])
    for (let i = 0; i < o.hosts; i++) {
      const ns = `${id}-h${i}`
      ip(["netns", "add", ns])
      created.push(ns)
      ip(["-n", ns, "link", "set", "lo", "up"])
      // Both ends are created inside our namespaces: the host's own network is never touched.
      ip(["-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", `vh${i}`, "netns", bridgeNs])
      ip(["-n", ns, "addr", "add", `${subnet}.${i + 1}/24`, "dev", "eth0"])
      ip(["-n", ns, "link", "set", "eth0", "up"])
      ip(["-n", bridgeNs, "link", "set", `vh${i}`, "master", "br0"])
      ip(["-n", bridgeNs, "link", "set", `vh${i}`, "up"])
      if (o.tcpRetries2 !== undefined) {
        if (!Number.isInteger(o.tcpRetries2) || o.tcpRetries2 < 1 || o.tcpRetries2 > 15) throw new Error("createTestNetwork: tcpRetries2 must be 1..15")
        ip(["netns", "exec", ns, "sh", "-c", `echo ${o.tcpRetries2} > /proc/sys/net/ipv4/tcp_retries2`])
      }
      hosts.push({ index: i, ns, ip: `${subnet}.${i + 1}` })
    }
    if (o.hostnames) {
      if (o.hostnames.length !== o.hosts || o.hostnames.some((h) => !/^[A-Za-z0-9][A-Za-z0-9.-]*$/.test(h))) {
        throw new Error("createTestNetwork: hostnames must be one plain host name per host")
      }
      const lines = ["127.0.0.1 localhost", ...hosts.map((h) => `${h.ip} ${o.hostnames![h.index]}`)].join("\n") + "\n"
      for (const h of hosts) {
        mkdirSync(`/etc/netns/${h.ns}`, { recursive: true })
        writeFileSync(`/etc/netns/${h.ns}/hosts`, lines)
      }
    }
  } catch (e) {
    destroy()
    throw e
  }
  return net
}
