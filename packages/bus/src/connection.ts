/**
 * The NATS connection as an Effect service: a scoped resource that reconnects forever by
 * default and drains when its scope closes.
 */
import type { Authenticator, ConnectionOptions, NatsConnection, Status, TlsOptions } from "@nats-io/nats-core"
import { connect } from "@nats-io/transport-node"
import { Context, Effect, Layer, Stream } from "effect"
import { unavailable, type MoaError } from "@moa/protocol"

/**
 * How to reach NATS. `servers` may be one URL or several (a NATS cluster). Authentication
 * is either user/pass, a token, or an `authenticator` (e.g. `credsAuthenticator(bytes)` for
 * nkeys/JWT creds); `tls` takes the nats.js TLS options.
 */
export interface NatsOptions {
  readonly servers: string | ReadonlyArray<string>
  /** Client name shown by the server (`connz`). */
  readonly name?: string
  readonly user?: string
  readonly pass?: string
  readonly token?: string
  readonly authenticator?: Authenticator | Array<Authenticator>
  readonly tls?: TlsOptions | null
  /** Give up after this many reconnect attempts (-1 = never give up; default -1). */
  readonly maxReconnectAttempts?: number
  /** Milliseconds between reconnect attempts (default 250). */
  readonly reconnectTimeWait?: number
  /** Connect timeout in ms (default 5000). */
  readonly timeout?: number
  /** Keep trying when the first connect fails instead of failing (default false). */
  readonly waitOnFirstConnect?: boolean
  /** Milliseconds to wait for a drain at scope close before closing hard (default 5000). */
  readonly drainTimeoutMs?: number
  /** Escape hatch: any other nats.js connection option. */
  readonly extra?: Partial<ConnectionOptions>
}

/** Normalise a URL or list (accepts comma-separated strings like MOA_NATS_URL). */
export const serverList = (servers: string | ReadonlyArray<string>): Array<string> =>
  (typeof servers === "string" ? servers.split(",") : [...servers]).map((s) => s.trim()).filter((s) => s.length > 0)

export const toConnectionOptions = (opts: NatsOptions): ConnectionOptions => ({
  servers: serverList(opts.servers),
  name: opts.name,
  user: opts.user,
  pass: opts.pass,
  token: opts.token,
  authenticator: opts.authenticator,
  tls: opts.tls,
  maxReconnectAttempts: opts.maxReconnectAttempts ?? -1,
  reconnectTimeWait: opts.reconnectTimeWait ?? 250,
  reconnectJitter: 50,
  timeout: opts.timeout ?? 5000,
  waitOnFirstConnect: opts.waitOnFirstConnect ?? false,
  pingInterval: 10_000,
  // nats.js otherwise builds an Error per request to keep async stack traces: measurable at 10k req/s.
  noAsyncTraces: true,
  ...opts.extra,
})

/** The connected client (`nc`) plus the options it was made with. */
export interface NatsService {
  readonly nc: NatsConnection
  readonly options: NatsOptions
}

export class Nats extends Context.Tag("@moa/bus/Nats")<Nats, NatsService>() {}

/** Connect (failing with UNAVAILABLE naming the servers when nobody answers). */
export const connectNats = (opts: NatsOptions): Effect.Effect<NatsConnection, MoaError> =>
  Effect.tryPromise({
    try: () => connect(toConnectionOptions(opts)),
    catch: (e) =>
      unavailable(
        `cannot connect to NATS at ${serverList(opts.servers).join(", ")}: ${(e as Error)?.message ?? e}. ` +
          "Is nats-server running there? (moa up starts one for you when no --nats URL is given.)",
      ),
  })

/** Drain (finish subscriptions, flush publishes) and close; hard close after a timeout. */
export const drainNats = (nc: NatsConnection, timeoutMs = 5000): Effect.Effect<void> =>
  Effect.promise(async () => {
    if (nc.isClosed()) return
    const drained = nc.isDraining() ? nc.closed() : nc.drain().catch(() => undefined)
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), timeoutMs)))
    const r = await Promise.race([drained.then(() => "ok" as const), timedOut])
    clearTimeout(timer)
    if (r === "timeout" && !nc.isClosed()) await nc.close().catch(() => undefined)
  })

/** A scoped connection: drained when the scope closes. */
export const scopedNats = (opts: NatsOptions): Effect.Effect<NatsConnection, MoaError, import("effect/Scope").Scope> =>
  Effect.acquireRelease(connectNats(opts), (nc) => drainNats(nc, opts.drainTimeoutMs))

/** Layer providing `Nats` from options. */
export const NatsLive = (opts: NatsOptions): Layer.Layer<Nats, MoaError> =>
  Layer.scoped(
    Nats,
    Effect.map(scopedNats(opts), (nc) => ({ nc, options: opts })),
  )

/** Layer providing `Nats` from an existing connection (not closed by the layer). */
export const NatsFromConnection = (nc: NatsConnection, options: NatsOptions = { servers: nc.getServer() }): Layer.Layer<Nats> =>
  Layer.succeed(Nats, { nc, options })

/**
 * Connection status changes (disconnect, reconnect, …) as a Stream; ends when the connection
 * closes. (Not Stream.fromAsyncIterable: its finalizer awaits the iterator's return(), which
 * nats.js resolves only at close, so interrupting it would hang.)
 */
export const statusStream = (nc: NatsConnection): Stream.Stream<Status> =>
  Stream.async<Status>((emit) => {
    void (async () => {
      for await (const s of nc.status()) void emit.single(s)
      void emit.end()
    })().catch(() => emit.end())
  })
