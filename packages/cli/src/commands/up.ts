/**
 * `moa up <cluster-file> [--nats URL] [--detach] [--only a,b] [--demo]`
 */
import { spawn } from "node:child_process"
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { pathToFileURL } from "node:url"
import { Args, Command, Options } from "@effect/cli"
import { connect } from "@nats-io/transport-node"
import { Effect, Option } from "effect"
import { findNatsServerBinary, NATS_INSTALL_HINT, serverList, spawnNatsServer, type NatsServerHandle } from "@moa/bus"
import { ClusterFileError, loadClusterFile, makeClient, type ClusterDefinition } from "@moa/runtime"
import { CliFailure, fail, table } from "../common.ts"
import { formatAgentLine } from "../logs.ts"
import { Supervisor } from "../supervisor.ts"
import { isAlive, readState, removeState, stateDir, statePath, writeState, type RunState } from "../state.ts"

export interface DemoCall {
  readonly agent: string
  readonly verb: string
  readonly request: unknown
  readonly stream?: boolean
}

const load = (file: string) =>
  Effect.tryPromise({
    try: () => loadClusterFile(file),
    catch: (e) =>
      new CliFailure({
        message: e instanceof ClusterFileError ? `moa up: refusing to start: ${e.message}` : `moa up: cannot load ${file}: ${String(e)}`,
      }),
  })

const say = (s: string) => process.stdout.write(`${s}\n`)

const printSummary = (cluster: ClusterDefinition, st: RunState) => {
  const rows = [["agent", "role", "replicas", "pids", "subject"]]
  const names = [...new Set(st.agents.map((a) => a.agent))]
  for (const n of names) {
    const def = cluster.agents.find((a) => a.name === n)!
    const pids = st.agents.filter((a) => a.agent === n).map((a) => a.pid ?? "-")
    rows.push([n, def.role, String(pids.length), pids.join(","), `moa.${cluster.name}.${n}.<verb>`])
  }
  say(`\ncluster "${cluster.name}" is up (${st.file})`)
  say(`NATS: ${st.natsUrl}${st.embeddedNats ? " (embedded nats-server -js, temporary store)" : ""}\n`)
  say(table(rows))
  say(`\nconnect:  MOA_NATS_URL=${st.natsUrl}   (any NATS client; services are listed by $SRV.INFO)`)
  say(`try:      npm run moa -- call ${names.includes("router") ? "router" : names[0]} generate '{"prompt":"2 + 3 * 4"}'`)
  say(`          npm run moa -- status`)
}

const runDemo = async (natsUrl: string, cluster: ClusterDefinition, calls: ReadonlyArray<DemoCall>) => {
  const nc = await connect({ servers: serverList(natsUrl) })
  const client = makeClient(nc, cluster.name)
  say("\ndemo:")
  for (const c of calls) {
    const shown = JSON.stringify(c.request)
    try {
      if (c.stream) {
        process.stdout.write(`  ${c.agent}.${c.verb} ${shown}\n    → (stream) `)
        for await (const chunk of client.stream(c.agent, c.verb, c.request)) {
          const t = (chunk as { text?: string })?.text
          process.stdout.write(t !== undefined ? t : JSON.stringify(chunk) + " ")
        }
        process.stdout.write("\n")
      } else {
        const reply = await client.call(c.agent, c.verb, c.request)
        say(`  ${c.agent}.${c.verb} ${shown}\n    → ${JSON.stringify(reply)}`)
      }
    } catch (e) {
      say(`  ${c.agent}.${c.verb} ${shown}\n    → error ${String(e)}`)
    }
  }
  await nc.close()
}

const detach = (file: string, nats: Option.Option<string>, only: Option.Option<string>, cluster: ClusterDefinition) =>
  Effect.gen(function* () {
    const existing = readState(cluster.name)
    if (existing && isAlive(existing.pid)) return yield* fail(`cluster "${cluster.name}" is already running (pid ${existing.pid}); stop it with \`moa down ${cluster.name}\``)
    mkdirSync(stateDir(), { recursive: true })
    const logFile = join(stateDir(), `${cluster.name}.log`)
    const fd = openSync(logFile, "a")
    const bin = resolve(dirname(new URL(import.meta.url).pathname), "../../bin/moa.js")
    const args = [bin, "up", resolve(file)]
    if (Option.isSome(nats)) args.push("--nats", nats.value)
    if (Option.isSome(only)) args.push("--only", only.value)
    const child = spawn(process.execPath, args, { detached: true, stdio: ["ignore", fd, fd], env: { ...process.env, MOA_LOG_FORMAT: "json", MOA_DETACHED: "1" } })
    closeSync(fd)
    child.unref()
    const deadline = Date.now() + 180_000
    while (Date.now() < deadline) {
      const st = readState(cluster.name)
      if (st && st.pid === child.pid && st.status === "running") {
        printSummary(cluster, st)
        say(`\ndetached: supervisor pid ${st.pid}, log ${logFile}; stop with \`npm run moa -- down ${cluster.name}\``)
        return
      }
      if (child.exitCode !== null || !isAlive(child.pid)) {
        const tail = existsSync(logFile) ? readFileSync(logFile, "utf8").split("\n").slice(-15).join("\n") : ""
        return yield* fail(`moa up --detach: the cluster exited during start-up; last log lines (${logFile}):\n${tail}`)
      }
      yield* Effect.sleep("200 millis")
    }
    return yield* fail(`moa up --detach: cluster not ready after 180 s; see ${logFile}`)
  })

export const upCommand = Command.make(
  "up",
  {
    file: Args.text({ name: "cluster-file" }).pipe(Args.withDescription("TypeScript file exporting defineCluster(...)")),
    nats: Options.text("nats").pipe(Options.withDescription("NATS URL(s), comma-separated (default: MOA_NATS_URL, else an embedded nats-server)"), Options.optional),
    detach: Options.boolean("detach").pipe(Options.withDescription("run in the background; stop with `moa down`")),
    only: Options.text("only").pipe(Options.withDescription("start only these agents (comma-separated)"), Options.optional),
    demo: Options.boolean("demo").pipe(Options.withDescription("after start-up, make the calls the cluster file exports as `demo`; exit afterwards unless stdout is a terminal")),
  },
  ({ file, nats, detach: bg, only, demo }) =>
    Effect.scoped(
      Effect.gen(function* () {
        const cluster = yield* load(file)
        let agents = cluster.agents
        if (Option.isSome(only)) {
          const want = only.value.split(",").map((s) => s.trim()).filter(Boolean)
          const unknown = want.filter((w) => !agents.some((a) => a.name === w))
          if (unknown.length) return yield* fail(`moa up: --only names unknown agents: ${unknown.join(", ")}; ${file} has ${agents.map((a) => a.name).join(", ")}`)
          agents = agents.filter((a) => want.includes(a.name))
        }
        if (bg) return yield* detach(file, nats, only, cluster)

        const existing = readState(cluster.name)
        if (existing && existing.pid !== process.pid && isAlive(existing.pid))
          return yield* fail(`cluster "${cluster.name}" is already running here (pid ${existing.pid}); stop it with \`moa down ${cluster.name}\``)

        const given = Option.getOrUndefined(nats) || process.env.MOA_NATS_URL || (cluster.nats ? serverList(cluster.nats as string).join(",") : undefined)
        let embedded: NatsServerHandle | undefined
        if (!given) {
          if (!findNatsServerBinary()) return yield* fail(`moa up: no NATS URL given and ${NATS_INSTALL_HINT}`)
          embedded = yield* Effect.acquireRelease(
            Effect.tryPromise({ try: () => spawnNatsServer({ jetstream: true }), catch: (e) => new CliFailure({ message: `moa up: cannot start nats-server: ${(e as Error).message}` }) }),
            (h) => Effect.promise(() => h.stop()),
          )
        }
        const natsUrl = given || embedded!.url
        const tty = process.stdout.isTTY === true && process.env.MOA_DETACHED !== "1"
        const abs = resolve(file)
        const sup = yield* Effect.acquireRelease(
          Effect.sync(() => {
            const s = new Supervisor({
              cluster,
              clusterFile: abs,
              natsUrl,
              agents,
              onLine: (r, line, stream) => {
                const out = tty ? formatAgentLine(`${r.agent}#${r.index}`, line) : `[${r.agent}#${r.index}] ${line}`
                if (out !== undefined) (stream === "stdout" ? process.stdout : process.stderr).write(`${out}\n`)
              },
            })
            s.start()
            return s
          }),
          (s) =>
            Effect.promise(async () => {
              say(`moa: stopping cluster "${cluster.name}": draining agents…`)
              await s.stop()
            }),
        )
        const snapshot = (status: RunState["status"]): RunState => ({
          cluster: cluster.name,
          file: abs,
          pid: process.pid,
          natsUrl,
          embeddedNats: embedded ? { pid: embedded.pid(), storeDir: embedded.storeDir } : undefined,
          agents: sup.replicas.map((r) => ({ agent: r.agent, replica: r.index, pid: r.pid })),
          startedAt: new Date().toISOString(),
          log: process.env.MOA_DETACHED === "1" ? join(stateDir(), `${cluster.name}.log`) : undefined,
          status,
        })
        writeState(snapshot("starting"))
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => {
            const st = readState(cluster.name)
            if (st?.pid === process.pid) removeState(cluster.name)
          }),
        )
        yield* Effect.tryPromise({ try: () => sup.waitReady(Number(process.env.MOA_READY_TIMEOUT_MS || 300_000)), catch: (e) => new CliFailure({ message: `moa up: ${(e as Error).message}` }) })
        if (sup.failed.length === sup.replicas.length) return yield* fail("moa up: every agent failed to start; see the messages above")
        // Keep the state file current as replicas restart (pids change).
        const refresh = setInterval(() => writeState(snapshot("running")), 1000)
        yield* Effect.addFinalizer(() => Effect.sync(() => clearInterval(refresh)))
        const st = snapshot("running")
        writeState(st)
        printSummary(cluster, st)
        if (demo) {
          const mod = (yield* Effect.promise(() => import(pathToFileURL(abs).href))) as { demo?: ReadonlyArray<DemoCall> }
          yield* Effect.promise(() => runDemo(natsUrl, cluster, mod.demo ?? []))
          if (!process.stdout.isTTY) {
            say("\n(stdout is not a terminal: stopping the demo cluster)")
            return
          }
        }
        say(`\nrunning; Ctrl-C (or \`npm run moa -- down ${cluster.name}\`) drains and stops everything`)
        return yield* Effect.never
      }),
    ),
).pipe(Command.withDescription("start every agent of a cluster file as supervised processes"))

export { statePath }
