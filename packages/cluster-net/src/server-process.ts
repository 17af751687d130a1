/**
 * A nats-server process started from a config file, optionally inside a network namespace,
 * whose whole log is kept (tests read permission refusals and cluster events from it).
 */
import { findNatsServerBinary, NATS_INSTALL_HINT } from "@moa/bus"
import { spawn, type ChildProcess } from "node:child_process"

export interface ServerProcessOptions {
  readonly configFile: string
  /** Run inside this network namespace (`ip netns exec <ns>`; needs root). */
  readonly netns?: string
  /** Give up waiting for "Server is ready" after this long (default 15 s). */
  readonly readyTimeoutMs?: number
  /** Also copy the server's log to this process's stderr. */
  readonly echo?: boolean
}

export interface ServerProcess {
  readonly pid: number
  /** Everything the server logged so far. */
  readonly log: () => string
  /** Resolves when a log line (written after offset `since`, default 0) matches; rejects after `timeoutMs`. */
  readonly waitForLog: (re: RegExp, timeoutMs?: number, since?: number) => Promise<string>
  /** Current length of the log, to wait only for lines written after now. */
  readonly mark: () => number
  readonly kill: (signal?: NodeJS.Signals) => Promise<void>
  readonly exited: () => boolean
}

export const startServerProcess = async (o: ServerProcessOptions): Promise<ServerProcess> => {
  const bin = findNatsServerBinary()
  if (!bin) throw new Error(NATS_INSTALL_HINT)
  const [cmd, args] = o.netns ? ["ip", ["netns", "exec", o.netns, bin, "-c", o.configFile]] : [bin, ["-c", o.configFile]]
  const child: ChildProcess = spawn(cmd, args as Array<string>, { stdio: ["ignore", "ignore", "pipe"] })
  let log = ""
  const waiters = new Set<() => void>()
  child.stderr?.on("data", (d: Buffer) => {
    log += d.toString()
    if (o.echo) process.stderr.write(d)
    for (const w of waiters) w()
  })
  const exit = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  child.once("exit", () => {
    for (const w of waiters) w()
  })
  const exited = () => child.exitCode !== null || child.signalCode !== null

  const waitForLog = (re: RegExp, timeoutMs = 15_000, since = 0): Promise<string> =>
    new Promise((resolve, reject) => {
      const check = () => {
        const m = log.slice(since).split("\n").find((l) => re.test(l))
        if (m !== undefined) {
          done()
          resolve(m)
        } else if (exited()) {
          done()
          reject(new Error(`nats-server (${o.configFile}) exited before logging ${re}:\n${log.slice(-3000)}`))
        }
      }
      const t = setTimeout(() => {
        done()
        reject(new Error(`nats-server (${o.configFile}) did not log ${re} within ${timeoutMs} ms:\n${log.slice(-3000)}`))
      }, timeoutMs)
      const done = () => {
        clearTimeout(t)
        waiters.delete(check)
      }
      waiters.add(check)
      check()
    })

  await waitForLog(/Server is ready/, o.readyTimeoutMs ?? 15_000)
  return {
    pid: child.pid!,
    log: () => log,
    waitForLog,
    mark: () => log.length,
    exited,
    kill: async (signal = "SIGTERM") => {
      if (exited()) return
      child.kill(signal)
      const t = setTimeout(() => child.kill("SIGKILL"), 5000)
      await exit
      clearTimeout(t)
    },
  }
}
