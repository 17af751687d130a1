// The router as a NATS service: `moa.<cluster>.router.route` takes a RouteRequest and replies
// with a RouteResponse (answer + trace), or a NATS service error (400 bad request, 503 nobody
// answered). Registered with the services API, so `$SRV.PING|INFO|STATS` see it.
import type { NatsConnection } from "@nats-io/nats-core"
import { Svcm, type Service } from "@nats-io/services"
import { Either, ParseResult, Schema } from "effect"
import { natsExpert, packEnvelope, pollServices, unpackEnvelope, type ExpertClient } from "./client.ts"
import { NoExpertAnswered, RouteRequest, RouteRequestInvalid, RouteResponse } from "./schema.ts"
import type { Router } from "./router.ts"

export const routeSubject = (cluster: string, name = "router") => `moa.${cluster}.${name}.route`

const decodeRequest = Schema.decodeUnknownEither(RouteRequest, { errors: "first", onExcessProperty: "error" })

/** Decode a RouteRequest; the Left says which field is wrong. */
export const parseRouteRequest = (u: unknown): Either.Either<RouteRequest, string> =>
  Either.mapLeft(decodeRequest(u), (e) => {
    const [first] = ParseResult.ArrayFormatter.formatErrorSync(e)
    return first ? `route request: field "${first.path.join(".") || "(root)"}": ${first.message}` : `route request: ${e.message}`
  })

/** Serve a router on NATS. Stop it with `service.stop()`. */
export const serveRouter = async (nc: NatsConnection, cluster: string, router: Router, opts: { name?: string; metadata?: Record<string, string> } = {}): Promise<Service> => {
  const name = opts.name ?? "router"
  const svc = await new Svcm(nc).add({
    name: `moa-${cluster}-${name}`,
    version: "0.1.0",
    description: "moa router: MoE gating and Mixture-of-Agents aggregation",
    metadata: { cluster, agent: name, role: "router", gate: router.gate?.version ?? "none", ...opts.metadata },
  })
  svc.addEndpoint("route", {
    subject: routeSubject(cluster, name),
    handler: (err, msg) => {
      if (err) return
      let raw: unknown
      try {
        raw = unpackEnvelope(msg.data)
      } catch {
        msg.respondError(400, "route request: not msgpack; send a msgpack RouteRequest { prompt, mode?, … }")
        return
      }
      const parsed = parseRouteRequest(raw)
      if (Either.isLeft(parsed)) {
        msg.respondError(400, parsed.left)
        return
      }
      router.route(parsed.right).then(
        (res) => msg.respond(packEnvelope(Schema.encodeSync(RouteResponse)(res))),
        (e) => {
          if (e instanceof NoExpertAnswered) msg.respondError(503, e.message)
          else if (e instanceof RouteRequestInvalid) msg.respondError(400, e.message)
          else msg.respondError(500, `router failed: ${(e as Error)?.message ?? String(e)}`)
        },
      )
    },
  })
  return svc
}

/** Ask a router over NATS (what `moa console` and tests use). Throws the service error's text on failure. */
export const askRouter = async (nc: NatsConnection, cluster: string, req: RouteRequest, opts: { timeoutMs?: number; name?: string } = {}): Promise<RouteResponse> => {
  const msg = await nc.request(routeSubject(cluster, opts.name), packEnvelope(req), { timeout: opts.timeoutMs ?? 30_000 })
  const code = msg.headers?.get("Nats-Service-Error-Code")
  if (code) throw new Error(`router error ${code}: ${msg.headers?.get("Nats-Service-Error")}`)
  return Schema.decodeUnknownSync(RouteResponse)(unpackEnvelope(msg.data))
}

/**
 * Find the cluster's experts through `$SRV.INFO`: every agent of `cluster` that serves
 * `generate` (except routers) becomes a NATS ExpertClient. Answers are collected for `waitMs`
 * (default 1 s); a slow replica may be missed, so agents re-discover periodically.
 */
export const discoverExperts = async (nc: NatsConnection, cluster: string, opts: { exclude?: ReadonlyArray<string>; waitMs?: number } = {}): Promise<ExpertClient[]> => {
  const names = new Set<string>()
  for (const s of await pollServices(nc, cluster, opts.waitMs ?? 1000)) {
    if (s.role === "router" || !s.verbs.includes("generate") || opts.exclude?.includes(s.agent)) continue
    names.add(s.agent)
  }
  return [...names].sort().map((n) => natsExpert(nc, cluster, n))
}
