/**
 * Registration through the NATS services API (ADR-32), so `$SRV.PING|INFO|STATS` finds every
 * agent, and discovery helpers that read those answers.
 */
import type { NatsConnection } from "@nats-io/nats-core"
import { Svcm, type Service, type ServiceConfig, type ServiceIdentity, type ServiceInfo, type ServiceStats } from "@nats-io/services"
import { Effect, type Scope } from "effect"
import { toMoaError, type MoaError } from "@moa/protocol"
import { Nats } from "./connection.ts"

export type { Service, ServiceConfig, ServiceIdentity, ServiceInfo, ServiceStats, ServiceMsg } from "@nats-io/services"

/** Add a service; it is stopped when the scope closes. */
export const addService = (config: ServiceConfig): Effect.Effect<Service, MoaError, Nats | Scope.Scope> =>
  Effect.flatMap(Nats, ({ nc }) =>
    Effect.acquireRelease(
      Effect.tryPromise({ try: () => new Svcm(nc).add(config), catch: (e) => toMoaError(e) }),
      (svc) => Effect.promise(() => (svc.isStopped ? Promise.resolve(null) : svc.stop().catch(() => null))),
    ),
  )

export interface DiscoverOptions {
  /** Only services with this name. */
  readonly name?: string
  /** How long to collect answers (ms, default 500). */
  readonly waitMs?: number
}

const collectAll = async <T>(it: AsyncIterable<T>): Promise<Array<T>> => {
  const out: Array<T> = []
  for await (const x of it) out.push(x)
  return out
}

/** One discovered service instance: its identity, info and stats merged by id. */
export interface DiscoveredService {
  readonly id: string
  readonly name: string
  readonly version: string
  readonly metadata: Record<string, string>
  readonly info: ServiceInfo | undefined
  readonly stats: ServiceStats | undefined
}

/** Ask `$SRV.INFO` and `$SRV.STATS` (answers gathered for `waitMs`), merged per instance id. */
export const discoverPromise = async (nc: NatsConnection, opts: DiscoverOptions = {}): Promise<Array<DiscoveredService>> => {
  const client = new Svcm(nc).client({ strategy: "timer", maxWait: opts.waitMs ?? 500 })
  const [infos, stats] = await Promise.all([collectAll(await client.info(opts.name)), collectAll(await client.stats(opts.name))])
  const byId = new Map<string, { info?: ServiceInfo; stats?: ServiceStats }>()
  for (const i of infos) byId.set(i.id, { ...byId.get(i.id), info: i })
  for (const s of stats) byId.set(s.id, { ...byId.get(s.id), stats: s })
  return [...byId.entries()].map(([id, v]) => {
    const ident: ServiceIdentity = (v.info ?? v.stats)!
    return {
      id,
      name: ident.name,
      version: ident.version,
      metadata: { ...(ident.metadata ?? {}) },
      info: v.info,
      stats: v.stats,
    }
  })
}

export const discover = (opts: DiscoverOptions = {}): Effect.Effect<Array<DiscoveredService>, MoaError, Nats> =>
  Effect.flatMap(Nats, ({ nc }) => Effect.tryPromise({ try: () => discoverPromise(nc, opts), catch: (e) => toMoaError(e) }))

/** `$SRV.PING` answers gathered for `waitMs`. */
export const ping = (opts: DiscoverOptions = {}): Effect.Effect<Array<ServiceIdentity>, MoaError, Nats> =>
  Effect.flatMap(Nats, ({ nc }) =>
    Effect.tryPromise({
      try: async () => collectAll(await new Svcm(nc).client({ strategy: "timer", maxWait: opts.waitMs ?? 500 }).ping(opts.name)),
      catch: (e) => toMoaError(e),
    }),
  )
