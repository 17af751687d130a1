/** `moa status [--json]`: every agent found through $SRV.INFO / $SRV.STATS. */
import { Command, Options } from "@effect/cli"
import { Effect, Option } from "effect"
import { discoverPromise, type DiscoveredService } from "@moa/bus"
import type { AgentStatsData } from "@moa/runtime"
import { CliFailure, fmtDuration, fmtMs, resolveTarget, table, withConnection } from "../common.ts"

export interface AgentStatus {
  readonly cluster: string
  readonly agent: string
  readonly role: string
  readonly replicas: number
  readonly version: string
  readonly backend: string
  readonly uptimeMs: number
  readonly requests: number
  readonly errors: number
  readonly avgMs: number
  readonly p99Ms: number
  readonly inFlight: number
  readonly instances: ReadonlyArray<{ readonly id: string; readonly pid: string; readonly host: string; readonly status: string; readonly requests: number }>
}

const dataOf = (s: DiscoveredService): AgentStatsData | undefined => s.stats?.endpoints?.find((e) => e.name === "rpc")?.data as AgentStatsData | undefined

/** Group service instances (replicas) by cluster and agent. */
export const summarise = (services: ReadonlyArray<DiscoveredService>, cluster?: string): Array<AgentStatus> => {
  const groups = new Map<string, Array<DiscoveredService>>()
  for (const s of services) {
    if (!s.metadata.cluster || !s.metadata.agent) continue // not a moa agent
    if (cluster && s.metadata.cluster !== cluster) continue
    const k = `${s.metadata.cluster}/${s.metadata.agent}`
    groups.set(k, [...(groups.get(k) ?? []), s])
  }
  const now = Date.now()
  return [...groups.values()]
    .map((g) => {
      const m = g[0].metadata
      const datas = g.map(dataOf)
      const requests = datas.reduce((n, d) => n + (d?.requests ?? 0), 0)
      const started = Math.min(...g.map((s) => (s.stats?.started ? Date.parse(s.stats.started) : now)))
      return {
        cluster: m.cluster,
        agent: m.agent,
        role: m.role ?? "?",
        replicas: g.length,
        version: g[0].version,
        backend: [...new Set(g.map((s) => s.metadata.backend ?? "?"))].join(","),
        uptimeMs: now - started,
        requests,
        errors: datas.reduce((n, d) => n + (d?.errors ?? 0), 0),
        avgMs: requests ? datas.reduce((n, d) => n + (d?.avgMs ?? 0) * (d?.requests ?? 0), 0) / requests : 0,
        p99Ms: Math.max(0, ...datas.map((d) => d?.p99Ms ?? 0)),
        inFlight: datas.reduce((n, d) => n + (d?.inFlight ?? 0), 0),
        instances: g.map((s, i) => ({
          id: s.id,
          pid: s.metadata.pid ?? "?",
          host: s.metadata.host ?? "?",
          status: datas[i]?.status ?? "?",
          requests: datas[i]?.requests ?? 0,
        })),
      }
    })
    .sort((a, b) => a.cluster.localeCompare(b.cluster) || a.agent.localeCompare(b.agent))
}

export const statusCommand = Command.make(
  "status",
  {
    json: Options.boolean("json").pipe(Options.withDescription("print JSON")),
    nats: Options.text("nats").pipe(Options.optional),
    cluster: Options.text("cluster").pipe(Options.withDescription("only this cluster"), Options.optional),
    wait: Options.integer("wait").pipe(Options.withDescription("ms to collect $SRV answers"), Options.withDefault(500)),
  },
  ({ json, nats, cluster, wait }) => {
    const target = resolveTarget(Option.getOrUndefined(nats), Option.getOrUndefined(cluster))
    return withConnection(target, (nc) =>
      Effect.gen(function* () {
        const found = yield* Effect.tryPromise({ try: () => discoverPromise(nc, { waitMs: wait }), catch: (e) => new CliFailure({ message: `moa status: ${String(e)}` }) })
        const rows = summarise(found, Option.getOrUndefined(cluster))
        if (json) {
          process.stdout.write(`${JSON.stringify({ nats: target.natsUrl, agents: rows }, null, 2)}\n`)
          return
        }
        if (rows.length === 0) {
          process.stdout.write(`no moa agents answered on ${target.natsUrl} (${target.source})\n`)
          return
        }
        process.stdout.write(`NATS ${target.natsUrl}\n\n`)
        process.stdout.write(
          `${table([
            ["cluster", "agent", "role", "replicas", "version", "backend", "uptime", "requests", "errors", "avg", "p99", "in-flight"],
            ...rows.map((r) => [
              r.cluster,
              r.agent,
              r.role,
              String(r.replicas),
              r.version,
              r.backend,
              fmtDuration(r.uptimeMs),
              String(r.requests),
              String(r.errors),
              fmtMs(r.avgMs),
              fmtMs(r.p99Ms),
              String(r.inFlight),
            ]),
          ])}\n`,
        )
      }),
    )
  },
).pipe(Command.withDescription("list the agents on NATS with their load ($SRV.PING/INFO/STATS)"))
