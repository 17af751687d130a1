/**
 * One agent process as an Effect program: load the cluster file, connect to NATS (scoped:
 * drained at the end), run `setup`, register the NATS service and serve until interrupted
 * (SIGTERM/SIGINT via NodeRuntime.runMain), then drain: finish what is in flight, run
 * `teardown`, say goodbye on the events subject, disconnect.
 */
import { Effect, Stream, type Scope } from "effect"
import { moaError, type MoaError } from "@moa/protocol"
import { scopedNats, statusStream, type NatsOptions } from "@moa/bus"
import { makeClient } from "./client.ts"
import type { ClusterDefinition, SetupContext } from "./define.ts"
import { agentLogger } from "./logger.ts"
import { startAgentServer, type AgentServer } from "./server.ts"
import { loadClusterFile } from "./validate.ts"

export interface RunAgentOptions {
  /** A cluster definition, or the file to load it from. */
  readonly cluster: ClusterDefinition | string
  readonly agent: string
  readonly replica?: number
  readonly nats: NatsOptions
  /** How long to wait for in-flight requests when stopping (default 10 s). */
  readonly drainTimeoutMs?: number
  /** Called once the agent serves (the agent process tells its supervisor over IPC). */
  readonly onReady?: (server: AgentServer) => void
}

const fromUnknown = (what: string) => (e: unknown) =>
  (e as { _tag?: string })?._tag === "MoaError" ? (e as MoaError) : moaError("INTERNAL", `${what}: ${(e as Error)?.message ?? String(e)}`)

const runMaybeEffect = <A>(what: string, f: () => A | Promise<A> | Effect.Effect<A, unknown, never>): Effect.Effect<A, MoaError> =>
  Effect.flatMap(
    Effect.tryPromise({ try: async () => f(), catch: fromUnknown(what) }),
    (out) => (Effect.isEffect(out) ? Effect.mapError(out as Effect.Effect<A, unknown>, fromUnknown(what)) : Effect.succeed(out as A)),
  )

/** Start serving; the returned server is drained when the scope closes. */
export const startAgent = (opts: RunAgentOptions): Effect.Effect<AgentServer, MoaError | Error, Scope.Scope> =>
  Effect.gen(function* () {
    const cluster =
      typeof opts.cluster === "string" ? yield* Effect.tryPromise({ try: () => loadClusterFile(opts.cluster as string), catch: (e) => e as Error }) : opts.cluster
    const def = cluster.agents.find((a) => a.name === opts.agent)
    if (!def) {
      return yield* Effect.fail(
        moaError("NOT_FOUND", `cluster "${cluster.name}" has no agent "${opts.agent}"; it has: ${cluster.agents.map((a) => a.name).join(", ")}`),
      )
    }
    const replica = opts.replica ?? 0
    const log = agentLogger(cluster.name, def.name, replica)
    const nc = yield* scopedNats({ ...opts.nats, name: opts.nats.name ?? `moa:${cluster.name}:${def.name}:${replica}` })
    yield* Effect.forkScoped(
      Stream.runForEach(statusStream(nc), (s) =>
        Effect.sync(() => {
          if (s.type === "disconnect") log.warn({ server: s.server }, "disconnected from NATS; reconnecting")
          else if (s.type === "reconnect") log.info({ server: s.server }, "reconnected to NATS")
          else if (s.type === "error") log.warn({ err: s.error?.message }, "NATS error")
        }),
      ),
    )
    const client = makeClient(nc, cluster.name)
    let backend = "none"
    const metadata: Record<string, string> = {}
    const baseCtx = { cluster: cluster.name, agent: def.name, role: def.role, replica, replicas: def.replicas, log, nc, client, config: def.config }
    const setupCtx: SetupContext = {
      ...baseCtx,
      setBackend: (b) => {
        backend = String(b)
      },
      setMetadata: (k, v) => {
        metadata[k] = String(v)
      },
    }
    const setup = def.setup
    const state = setup ? yield* runMaybeEffect(`setup of agent "${def.name}" failed`, () => setup(setupCtx)) : undefined
    const teardown = def.teardown
    const server = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => startAgentServer({ def, cluster: cluster.name, replica, replicas: def.replicas, nc, state, log, setupContext: baseCtx, backend, metadata }),
        catch: fromUnknown(`agent "${def.name}" could not register its NATS service`),
      }),
      (srv) =>
        Effect.gen(function* () {
          log.info("draining")
          yield* Effect.promise(() => srv.drain(opts.drainTimeoutMs ?? 10_000))
          if (teardown) {
            yield* runMaybeEffect(`teardown of agent "${def.name}" failed`, () => teardown(state, setupCtx)).pipe(
              Effect.catchAll((e) => Effect.sync(() => log.error({ err: e.message }, "teardown failed"))),
            )
          }
          srv.emit("agent-down")
          log.info({ requests: srv.stats().requests }, "stopped")
        }),
    )
    server.emit("agent-up")
    log.info({ verbs: server.info().verbs, id: server.id, backend, subject: `moa.${cluster.name}.${def.name}.<verb>` }, "ready")
    opts.onReady?.(server)
    return server
  })

/** Serve until interrupted; fails if the NATS service stops by itself (so a supervisor restarts us). */
export const runAgent = (opts: RunAgentOptions): Effect.Effect<never, MoaError | Error> =>
  Effect.scoped(
    Effect.gen(function* () {
      const server = yield* startAgent(opts)
      const err = yield* Effect.promise(() => server.service.stopped)
      return yield* Effect.fail(moaError("UNAVAILABLE", `the NATS service stopped unexpectedly: ${err?.message ?? "no reason given"}`))
    }),
  )
