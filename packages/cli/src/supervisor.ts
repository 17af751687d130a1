/**
 * The supervisor behind `moa up`: one OS process per agent replica, restarted on crash with
 * exponential backoff; after `maxCrashes` crashes within `windowMs` it stops trying and says
 * why. Agent output (pino JSON lines) is forwarded with the agent's name in front.
 */
import { spawn, type ChildProcess } from "node:child_process"
import { createRequire } from "node:module"
import { pathToFileURL } from "node:url"
import { createInterface } from "node:readline"
import type { AgentDefinition, ClusterDefinition, RestartPolicy } from "@moa/runtime"

const require = createRequire(import.meta.url)

/** Absolute path of the agent entry and the tsx loader URL (so agents start from any cwd). */
export const agentEntry = (): { readonly entry: string; readonly loader: string } => ({
  entry: require.resolve("@moa/runtime/agent-main"),
  loader: pathToFileURL(require.resolve("tsx")).href,
})

export type ReplicaState = "starting" | "ready" | "restarting" | "stopping" | "stopped" | "failed"

export interface Replica {
  readonly agent: string
  readonly index: number
  state: ReplicaState
  child: ChildProcess | undefined
  pid: number | undefined
  restarts: number
  crashes: Array<number>
  /** Crashes in a row without ever becoming ready (reset when it is ready). */
  startFailures: number
  lastExit: string | undefined
  tail: Array<string>
  timer: NodeJS.Timeout | undefined
  readyWaiters: Array<() => void>
}

export interface SupervisorOptions {
  readonly cluster: ClusterDefinition
  readonly clusterFile: string
  readonly natsUrl: string
  readonly agents: ReadonlyArray<AgentDefinition>
  readonly restart?: Partial<RestartPolicy>
  /** Where agent output lines go (default: stdout/stderr, prefixed). */
  readonly onLine?: (replica: Replica, line: string, stream: "stdout" | "stderr") => void
  /** Supervisor's own messages (restarts, giving up). */
  readonly onEvent?: (message: string, level: "info" | "warn" | "error") => void
  /** SIGTERM → SIGKILL grace when stopping (default 15 s). */
  readonly killAfterMs?: number
  readonly env?: Record<string, string>
}

export class Supervisor {
  readonly replicas: Array<Replica> = []
  private stopping = false
  private readonly policy: RestartPolicy
  private readonly entry = agentEntry()

  constructor(private readonly opts: SupervisorOptions) {
    this.policy = { ...opts.cluster.restart, ...opts.restart }
    for (const a of opts.agents) {
      for (let i = 0; i < a.replicas; i++) {
        this.replicas.push({
          agent: a.name,
          index: i,
          state: "starting",
          child: undefined,
          pid: undefined,
          restarts: 0,
          crashes: [],
          startFailures: 0,
          lastExit: undefined,
          tail: [],
          timer: undefined,
          readyWaiters: [],
        })
      }
    }
  }

  private event(message: string, level: "info" | "warn" | "error" = "info") {
    if (this.opts.onEvent) this.opts.onEvent(message, level)
    else process.stderr.write(`moa: ${message}\n`)
  }

  start(): void {
    for (const r of this.replicas) this.spawn(r)
  }

  private spawn(r: Replica) {
    const def = this.opts.agents.find((a) => a.name === r.agent)!
    const child = spawn(
      process.execPath,
      [
        "--import",
        this.entry.loader,
        this.entry.entry,
        "--cluster",
        this.opts.clusterFile,
        "--agent",
        r.agent,
        "--replica",
        String(r.index),
        "--nats",
        this.opts.natsUrl,
      ],
      {
        stdio: ["ignore", "pipe", "pipe", "ipc"],
        env: { ...process.env, ...this.opts.env, ...def.env, MOA_LOG_FORMAT: "json", MOA_WAIT_FOR_NATS: "1" },
      },
    )
    r.child = child
    r.pid = child.pid
    r.state = "starting"
    const onLine = (stream: "stdout" | "stderr") => (line: string) => {
      r.tail.push(line)
      if (r.tail.length > 20) r.tail.shift()
      if (this.opts.onLine) this.opts.onLine(r, line, stream)
      else (stream === "stdout" ? process.stdout : process.stderr).write(`[${r.agent}#${r.index}] ${line}\n`)
    }
    createInterface({ input: child.stdout! }).on("line", onLine("stdout"))
    createInterface({ input: child.stderr! }).on("line", onLine("stderr"))
    child.on("message", (m: { type?: string }) => {
      if (m?.type === "ready") {
        r.state = "ready"
        r.startFailures = 0
        const ws = r.readyWaiters
        r.readyWaiters = []
        for (const w of ws) w()
      }
    })
    child.on("error", (e) => this.event(`${r.agent}#${r.index}: could not start: ${e.message}`, "error"))
    child.on("exit", (code, signal) => this.onExit(r, child, code, signal))
  }

  private onExit(r: Replica, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null) {
    if (r.child !== child) return
    r.child = undefined
    r.lastExit = signal ? `killed by ${signal}` : `exit code ${code}`
    if (this.stopping || r.state === "stopping") {
      r.state = "stopped"
      return
    }
    const now = Date.now()
    r.crashes = [...r.crashes.filter((t) => now - t < this.policy.windowMs), now]
    if (r.state !== "ready") r.startFailures++
    // Give up after maxCrashes within the window, or maxCrashes in a row before ever being
    // ready (a slow machine can space start-up crashes wider than the window).
    if (r.crashes.length >= this.policy.maxCrashes || r.startFailures >= this.policy.maxCrashes) {
      const why =
        r.crashes.length >= this.policy.maxCrashes
          ? `crashed ${r.crashes.length} times within ${Math.round(this.policy.windowMs / 1000)} s`
          : `crashed ${r.startFailures} times in a row before becoming ready`
      r.state = "failed"
      this.event(
        `${r.agent}#${r.index} ${why} (last: ${r.lastExit}); ` +
          `giving up on it. Its last output:\n${r.tail.slice(-8).map((l) => `    ${l}`).join("\n")}`,
        "error",
      )
      const ws = r.readyWaiters
      r.readyWaiters = []
      for (const w of ws) w()
      return
    }
    const delay = Math.min(this.policy.maxBackoffMs, this.policy.backoffMs * 2 ** (r.crashes.length - 1))
    r.state = "restarting"
    this.event(`${r.agent}#${r.index} stopped unexpectedly (${r.lastExit}); restarting in ${delay} ms`, "warn")
    r.timer = setTimeout(() => {
      r.timer = undefined
      if (this.stopping) return
      r.restarts++
      this.spawn(r)
    }, delay)
  }

  /** Resolves when every replica is ready (or failed); rejects after `timeoutMs`. */
  async waitReady(timeoutMs = 120_000): Promise<void> {
    const pending = this.replicas.filter((r) => r.state !== "ready" && r.state !== "failed")
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      Promise.all(pending.map((r) => new Promise<void>((res) => r.readyWaiters.push(res)))),
      new Promise<void>((_, rej) => {
        timer = setTimeout(() => {
          const late = this.replicas.filter((r) => r.state !== "ready").map((r) => `${r.agent}#${r.index} (${r.state})`)
          rej(new Error(`agents not ready after ${timeoutMs} ms: ${late.join(", ")}`))
        }, timeoutMs)
      }),
    ])
    clearTimeout(timer)
  }

  get failed(): Array<Replica> {
    return this.replicas.filter((r) => r.state === "failed")
  }

  /** SIGTERM every agent (they drain), SIGKILL what is left after the grace period. */
  async stop(): Promise<void> {
    this.stopping = true
    const live: Array<Promise<void>> = []
    for (const r of this.replicas) {
      if (r.timer) clearTimeout(r.timer)
      const c = r.child
      if (!c) {
        r.state = r.state === "failed" ? "failed" : "stopped"
        continue
      }
      r.state = "stopping"
      live.push(
        new Promise<void>((res) => {
          if (c.exitCode !== null || c.signalCode !== null) return res()
          const t = setTimeout(() => {
            this.event(`${r.agent}#${r.index} did not stop within ${this.opts.killAfterMs ?? 15_000} ms; killing it`, "warn")
            c.kill("SIGKILL")
          }, this.opts.killAfterMs ?? 15_000)
          c.once("exit", () => {
            clearTimeout(t)
            res()
          })
          c.kill("SIGTERM")
        }),
      )
    }
    await Promise.all(live)
  }
}
