/**
 * `moa console [--nats URL] [--cluster name] [--up cluster-file] [--mode moe] [--timeout ms]`
 *
 * In a terminal: an interactive prompt (docs/console.md). With piped input: one question per
 * line in, one JSON line `{question, answer, mode, trace}` per answer out, then exit 0.
 * `--up file` starts that cluster first (`moa up --detach`, embedded NATS) and stops it on exit:
 * what `npm run demo` does.
 */
import { spawn, spawnSync } from "node:child_process"
import * as readline from "node:readline"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Command, Options } from "@effect/cli"
import { Effect, Option } from "effect"
import { discoverPromise } from "@moa/bus"
import { CliFailure, liveStates, resolveTarget, withConnection } from "../common.ts"
import { ConsoleSession, MODES, type Mode } from "../console/session.ts"

const moaBin = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "bin", "moa.js")

/** `moa up <file> --detach`, its output on stderr (stdout stays clean for piped JSON). */
const upDetached = (file: string): Promise<void> =>
  new Promise((resolve, reject) => {
    process.stderr.write(`starting ${file} (moa up --detach, embedded NATS)…\n`)
    const child = spawn(process.execPath, [moaBin, "up", file, "--detach"], { stdio: ["ignore", "pipe", "pipe"], env: process.env })
    let out = ""
    child.stdout.on("data", (d) => { out += d; process.stderr.write(d) })
    child.stderr.on("data", (d) => { out += d; process.stderr.write(d) })
    child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`moa up ${file} failed (exit ${code}):\n${out.slice(-2000)}`))))
  })

const downCluster = (cluster: string) => {
  process.stderr.write(`stopping cluster ${cluster} (moa down)…\n`)
  spawnSync(process.execPath, [moaBin, "down", cluster], { stdio: ["ignore", process.stderr, process.stderr], env: process.env })
}

/** Lines of stdin, one at a time (a question is answered before the next line is read). */
async function* lines(input: NodeJS.ReadableStream): AsyncGenerator<string> {
  const rl = readline.createInterface({ input, crlfDelay: Infinity, terminal: false })
  for await (const l of rl) yield l
}

export const consoleCommand = Command.make(
  "console",
  {
    nats: Options.text("nats").pipe(Options.withDescription("NATS URL (default: the cluster started here by moa up)"), Options.optional),
    cluster: Options.text("cluster").pipe(Options.withDescription("cluster name (default: the one started here, or the router found via $SRV)"), Options.optional),
    up: Options.text("up").pipe(Options.withDescription("start this cluster file first (moa up --detach) and stop it on exit"), Options.optional),
    mode: Options.choice("mode", MODES).pipe(Options.withDefault("moe" as Mode)),
    timeout: Options.integer("timeout").pipe(Options.withDescription("deadline per question in ms"), Options.withDefault(120_000)),
  },
  ({ nats, cluster, up, mode, timeout }) =>
    Effect.gen(function* () {
      const upFile = Option.getOrUndefined(up)
      let started: string | undefined
      if (upFile) {
        const before = new Set(liveStates().map((s) => s.cluster))
        yield* Effect.tryPromise({ try: () => upDetached(upFile), catch: (e) => new CliFailure({ message: `moa console: ${(e as Error).message}` }) })
        started = liveStates().find((s) => !before.has(s.cluster) && path.resolve(s.file) === path.resolve(upFile))?.cluster ?? liveStates().find((s) => path.resolve(s.file) === path.resolve(upFile))?.cluster
      }
      const target = resolveTarget(Option.getOrUndefined(nats), Option.getOrUndefined(cluster) ?? started)
      const run = withConnection(target, (nc) =>
        Effect.tryPromise({
          try: async () => {
            let name = target.cluster
            if (!name) {
              const routers = (await discoverPromise(nc, { waitMs: 600 })).filter((s) => s.metadata.role === "router")
              const clusters = [...new Set(routers.map((s) => s.metadata.cluster).filter(Boolean))]
              if (clusters.length !== 1)
                throw new Error(clusters.length === 0 ? `no router answered on ${target.natsUrl}; start a cluster with \`moa up <file>\` (or \`npm run demo\`)` : `routers of several clusters answer (${clusters.join(", ")}); pick one with --cluster`)
              name = clusters[0]!
            }
            const tty = process.stdin.isTTY === true && process.stdout.isTTY === true
            if (tty) await interactive(nc, name, mode, timeout, target.natsUrl)
            else await piped(nc, name, mode, timeout)
          },
          catch: (e) => new CliFailure({ message: `moa console: ${(e as Error).message}` }),
        }),
      )
      yield* run.pipe(Effect.ensuring(Effect.sync(() => started && downCluster(started))))
    }),
).pipe(Command.withDescription("talk to a running cluster: questions, gate bars, candidates, ratings (piped: JSON lines)"))

const piped = async (nc: Parameters<typeof interactive>[0], cluster: string, mode: Mode, timeoutMs: number) => {
  const s = new ConsoleSession({ nc, cluster, mode, timeoutMs, write: (t) => process.stderr.write(t) })
  for await (const line of lines(process.stdin)) {
    const q = line.trim()
    if (!q) continue
    if (q.startsWith("/")) {
      if (!(await s.handle(q))) break
      continue
    }
    try {
      const a = await s.ask(q)
      process.stdout.write(JSON.stringify(a) + "\n")
    } catch (e) {
      process.stdout.write(JSON.stringify({ question: q, error: (e as Error).message, mode: s.mode }) + "\n")
    }
  }
}

const interactive = async (nc: import("@nats-io/nats-core").NatsConnection, cluster: string, mode: Mode, timeoutMs: number, url: string) => {
  const s = new ConsoleSession({ nc, cluster, mode, timeoutMs, color: true, write: (t) => process.stdout.write(t) })
  process.stdout.write(`moa console — cluster ${cluster} on ${url}, mode ${mode}. Ask a question, or /help.\n`)
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: true, prompt: "moa> " })
  rl.prompt()
  let busy = Promise.resolve(true)
  await new Promise<void>((resolve) => {
    rl.on("line", (line) => {
      busy = busy.then(async (go) => {
        if (!go) return false
        const more = await s.handle(line)
        if (more) rl.prompt()
        else rl.close()
        return more
      })
    })
    rl.on("close", () => void busy.then(() => resolve()))
    rl.on("SIGINT", () => rl.close())
  })
  process.stdout.write("bye\n")
}
