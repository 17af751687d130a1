/** Shared pieces of the `moa` commands: user-facing failures, finding NATS and the cluster. */
import { connect } from "@nats-io/transport-node"
import type { NatsConnection } from "@nats-io/nats-core"
import { Data, Effect } from "effect"
import { natsAuthFromEnv, serverList } from "@moa/bus"
import { isAlive, listStates, type RunState } from "./state.ts"

/** A failure to show the user as is (no stack), exit code 1. */
export class CliFailure extends Data.TaggedError("CliFailure")<{ readonly message: string; readonly exitCode?: number }> {}

export const fail = (message: string, exitCode = 1) => Effect.fail(new CliFailure({ message, exitCode }))

/** Clusters started by `moa up` from this directory whose supervisor is alive. */
export const liveStates = (): Array<RunState> => listStates().filter((s) => isAlive(s.pid))

export interface Target {
  readonly natsUrl: string
  readonly cluster: string | undefined
  readonly source: string
}

/** NATS URL: --nats, MOA_NATS_URL, the one cluster started here by `moa up`, else nats://127.0.0.1:4222. */
export const resolveTarget = (natsFlag: string | undefined, clusterFlag: string | undefined): Target => {
  const states = liveStates()
  const st = clusterFlag ? states.find((s) => s.cluster === clusterFlag) : states.length === 1 ? states[0] : undefined
  if (natsFlag) return { natsUrl: natsFlag, cluster: clusterFlag ?? st?.cluster, source: "--nats" }
  if (process.env.MOA_NATS_URL) return { natsUrl: process.env.MOA_NATS_URL, cluster: clusterFlag ?? st?.cluster, source: "MOA_NATS_URL" }
  if (st) return { natsUrl: st.natsUrl, cluster: st.cluster, source: `.moa/run/${st.cluster}.json` }
  return { natsUrl: "nats://127.0.0.1:4222", cluster: clusterFlag, source: "default" }
}

export const withConnection = <A, E>(target: Target, f: (nc: NatsConnection) => Effect.Effect<A, E>) =>
  Effect.acquireUseRelease(
    Effect.tryPromise({
      try: () => {
        // MOA_NATS_* credentials from `moa auth init`, when set (the console/admin user).
        const { inboxPrefix, ...auth } = natsAuthFromEnv()
        return connect({ name: "moa-cli", ...auth, ...(inboxPrefix ? { inboxPrefix } : {}), servers: serverList(target.natsUrl), timeout: 3000 })
      },
      catch: (e) =>
        new CliFailure({
          message:
            `cannot connect to NATS at ${target.natsUrl} (from ${target.source}): ${(e as Error).message}\n` +
            "Start a cluster with `moa up <cluster-file>`, or pass --nats URL / set MOA_NATS_URL.",
        }),
    }),
    f,
    (nc) => Effect.promise(() => nc.close().catch(() => undefined)),
  )

export const fmtMs = (ms: number | undefined) => (ms === undefined ? "-" : ms < 1 ? `${Math.round(ms * 1000)}µs` : `${ms.toFixed(ms < 10 ? 2 : 0)}ms`)

export const fmtDuration = (ms: number) => {
  const s = Math.floor(ms / 1000)
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`
}

/** A plain text table. */
export const table = (rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)))
  return rows.map((r) => r.map((c, i) => (c ?? "").padEnd(widths[i])).join("  ").trimEnd()).join("\n")
}
