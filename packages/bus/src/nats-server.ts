/**
 * Locating and spawning a real `nats-server` binary. Used by `moa up` (the embedded
 * server) and by every test in the monorepo (through `./testing.ts`).
 */
import { spawn, type ChildProcess } from "node:child_process"
import { accessSync, constants, mkdtempSync, rmSync } from "node:fs"
import { createServer, connect as netConnect } from "node:net"
import { tmpdir } from "node:os"
import { delimiter, join } from "node:path"

export const NATS_INSTALL_HINT =
  "nats-server was not found on PATH or in /usr/sbin. Install it (Debian/Ubuntu: `apt-get install -y nats-server`; " +
  "macOS: `brew install nats-server`; or download from https://github.com/nats-io/nats-server/releases), " +
  "or point moa at an existing server with --nats nats://host:4222 / MOA_NATS_URL."

/** Absolute path of the nats-server binary (MOA_NATS_SERVER_BIN, PATH, /usr/sbin, /usr/local/bin), or undefined. */
export const findNatsServerBinary = (): string | undefined => {
  const candidates: Array<string> = []
  if (process.env.MOA_NATS_SERVER_BIN) candidates.push(process.env.MOA_NATS_SERVER_BIN)
  for (const dir of (process.env.PATH ?? "").split(delimiter)) if (dir) candidates.push(join(dir, "nats-server"))
  candidates.push("/usr/sbin/nats-server", "/usr/local/bin/nats-server", "/usr/bin/nats-server")
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK)
      return c
    } catch {
      // try the next one
    }
  }
  return undefined
}

/** A free TCP port on 127.0.0.1 (asks the kernel for port 0, then releases it). */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.on("error", reject)
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address()
      const port = typeof addr === "object" && addr ? addr.port : 0
      srv.close(() => resolve(port))
    })
  })

const canConnect = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = netConnect({ host: "127.0.0.1", port })
    s.once("connect", () => {
      s.destroy()
      resolve(true)
    })
    s.once("error", () => resolve(false))
  })

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export interface NatsServerOptions {
  /** Enable JetStream (`-js`) with a store directory (default: true). */
  readonly jetstream?: boolean
  /** Port to listen on (default: a free loopback port). */
  readonly port?: number
  /** JetStream store directory (default: a fresh temp dir, removed by `stop()`). */
  readonly storeDir?: string
  /** Extra command-line arguments for nats-server. */
  readonly args?: ReadonlyArray<string>
  /** Forward the server's own log to this process's stderr (default: false). */
  readonly verbose?: boolean
}

export interface NatsServerHandle {
  /** `nats://127.0.0.1:<port>` */
  readonly url: string
  readonly port: number
  readonly storeDir: string | undefined
  /** PID of the current server process. */
  readonly pid: () => number | undefined
  /** Stop the server (SIGTERM, then SIGKILL after 3 s) and remove a temp store. Idempotent. */
  readonly stop: () => Promise<void>
  /** Kill the server (optionally with SIGKILL) and start it again on the same port and store. */
  readonly restart: (opts?: { readonly hard?: boolean; readonly downMs?: number }) => Promise<void>
}

const waitExit = (child: ChildProcess, ms: number): Promise<boolean> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(true)
    const t = setTimeout(() => resolve(false), ms)
    child.once("exit", () => {
      clearTimeout(t)
      resolve(true)
    })
  })

/**
 * Spawn a real nats-server on 127.0.0.1 and wait until it accepts connections.
 * Rejects with the install hint when the binary is missing.
 */
export const spawnNatsServer = async (opts: NatsServerOptions = {}): Promise<NatsServerHandle> => {
  const bin = findNatsServerBinary()
  if (!bin) throw new Error(NATS_INSTALL_HINT)
  const jetstream = opts.jetstream ?? true
  const ownStore = jetstream && !opts.storeDir
  const storeDir = jetstream ? (opts.storeDir ?? mkdtempSync(join(tmpdir(), "moa-nats-"))) : undefined
  let port = opts.port ?? (await freePort())
  let child: ChildProcess | undefined
  let stopped = false
  let stderrTail = ""

  const start = async (): Promise<void> => {
    const args = ["-a", "127.0.0.1", "-p", String(port), "-n", `moa-${port}`]
    if (jetstream && storeDir) args.push("-js", "-sd", storeDir)
    args.push(...(opts.args ?? []))
    stderrTail = ""
    const c = spawn(bin, args, { stdio: ["ignore", "ignore", "pipe"] })
    child = c
    c.stderr?.on("data", (d: Buffer) => {
      stderrTail = (stderrTail + d.toString()).slice(-4000)
      if (opts.verbose) process.stderr.write(d)
    })
    const deadline = Date.now() + 10_000
    while (Date.now() < deadline) {
      if (c.exitCode !== null) throw new Error(`nats-server exited with code ${c.exitCode} on port ${port}:\n${stderrTail}`)
      if (await canConnect(port)) {
        // With JetStream, the server accepts connections slightly before JS is ready.
        if (!jetstream || /Server is ready/.test(stderrTail)) return
      }
      await sleep(25)
    }
    c.kill("SIGKILL")
    throw new Error(`nats-server did not become ready on port ${port} within 10 s:\n${stderrTail}`)
  }

  // A port picked by freePort can be grabbed by someone else before the server binds it: retry.
  for (let attempt = 0; ; attempt++) {
    try {
      await start()
      break
    } catch (e) {
      if (attempt >= 3 || opts.port !== undefined || !/address already in use/i.test(String(e))) throw e
      port = await freePort()
    }
  }

  const kill = async (hard: boolean) => {
    const c = child
    if (!c) return
    c.kill(hard ? "SIGKILL" : "SIGTERM")
    if (!(await waitExit(c, 3000))) {
      c.kill("SIGKILL")
      await waitExit(c, 3000)
    }
  }

  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    storeDir,
    pid: () => child?.pid,
    stop: async () => {
      if (stopped) return
      stopped = true
      await kill(false)
      if (ownStore && storeDir) rmSync(storeDir, { recursive: true, force: true })
    },
    restart: async (r = {}) => {
      if (stopped) throw new Error("restart() after stop()")
      await kill(r.hard ?? false)
      if (r.downMs) await sleep(r.downMs)
      await start()
    },
  }
}
