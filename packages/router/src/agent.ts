// The router agent: one OS process that discovers the cluster's experts, watches the gate
// pointer (hot reload), polls $SRV.STATS for load and health, and serves
// `moa.<cluster>.router.route`. `agents/router` is the runnable wrapper around this.
import { connect } from "@nats-io/transport-node"
import type { NatsConnection } from "@nats-io/nats-core"
import { checkName } from "@moa/protocol"
import { ClusterMonitor, natsExpert } from "./client.ts"
import { Router } from "./router.ts"
import type { AggregatorSpec, RouteMode } from "./schema.ts"
import { discoverExperts, serveRouter } from "./service.ts"
import { watchGate } from "./store.ts"

export interface RouterAgentOptions {
  readonly nats: string
  readonly cluster: string
  readonly name?: string
  readonly mode?: RouteMode
  readonly aggregator?: AggregatorSpec
  readonly deadlineMs?: number
  /** Fixed expert list; default: discover (and re-discover every `discoverMs`). */
  readonly experts?: ReadonlyArray<string>
  readonly discoverMs?: number
  readonly statsMs?: number
  readonly log?: (line: string) => void
}

export interface RouterAgent {
  readonly router: Router
  readonly nc: NatsConnection
  stop(): Promise<void>
}

export const startRouterAgent = async (o: RouterAgentOptions): Promise<RouterAgent> => {
  const log = o.log ?? (() => {})
  const name = o.name ?? "router"
  const nc = await connect({ servers: o.nats, name: `${o.cluster}.${name}` })
  const initial = o.experts ? o.experts.map((e) => natsExpert(nc, o.cluster, e)) : await discoverExperts(nc, o.cluster, { exclude: [name] })
  const router = new Router({
    experts: initial,
    mode: o.mode,
    aggregator: o.aggregator,
    deadlineMs: o.deadlineMs,
    // a request may name an expert discovery has not seen yet; nobody serving it → "no-responders"
    resolveExpert: (expert) => (checkName(expert) === undefined && expert !== name ? natsExpert(nc, o.cluster, expert) : undefined),
  })
  log(`experts: ${router.experts.join(", ") || "(none yet)"}`)
  const stopWatch = await watchGate(
    nc,
    o.cluster,
    (b) => {
      router.setGate(b)
      log(`gate ${b.version} loaded (experts ${b.gate.experts.join(", ")})`)
    },
    { onError: (e) => log(`could not load a new gate version, keeping the old one: ${(e as Error).message}`) },
  )
  const monitor = new ClusterMonitor(nc, o.cluster, () => router.clientList, o.statsMs ?? 1000).start()
  const rediscover = o.experts
    ? undefined
    : setInterval(() => {
        discoverExperts(nc, o.cluster, { exclude: [name] })
          .then((cs) => {
            const added = router.addExperts(cs)
            if (added.length) log(`experts joined: ${added.join(", ")}`)
          })
          .catch(() => {})
      }, o.discoverMs ?? 5000)
  const svc = await serveRouter(nc, o.cluster, router, { name })
  log(`serving moa.${o.cluster}.${name}.route`)
  return {
    router,
    nc,
    stop: async () => {
      if (rediscover) clearInterval(rediscover)
      await monitor.stop()
      await stopWatch()
      await svc.stop().catch(() => {})
      await nc.drain().catch(() => {})
    },
  }
}
