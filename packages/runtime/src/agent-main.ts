/**
 * Entry of an agent process:
 *   node --import tsx packages/runtime/src/agent-main.ts --cluster <file> --agent <name> [--replica N] [--nats URL]
 * NATS URL: --nats, else MOA_NATS_URL, else the cluster file's `nats`, else nats://127.0.0.1:4222.
 * Tells a supervisor it is ready over IPC ({ type: "ready", ... }) when spawned with an IPC channel.
 */
// The NodeRuntime subpath, not the package barrel: the barrel loads all of platform-node
// (≈ 4.6 s vs 0.7 s on a loaded 2-core machine), and every agent process pays it at start.
import { runMain } from "@effect/platform-node/NodeRuntime"
import { Effect } from "effect"
import { busAuthFromEnv, serverList } from "@moa/bus"
import { runAgent } from "./agent.ts"
import { rootLogger } from "./logger.ts"
import { loadClusterFile, ClusterFileError } from "./validate.ts"

const args = process.argv.slice(2)
const flag = (name: string): string | undefined => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 ? args[i + 1] : undefined
}

const clusterFile = flag("cluster")
const agent = flag("agent")
if (!clusterFile || !agent) {
  process.stderr.write("usage: agent-main --cluster <cluster-file> --agent <name> [--replica N] [--nats URL]\n")
  process.exit(2)
}

const program = Effect.gen(function* () {
  const cluster = yield* Effect.tryPromise({ try: () => loadClusterFile(clusterFile), catch: (e) => e as Error })
  const servers = flag("nats") || process.env.MOA_NATS_URL || cluster.nats || "nats://127.0.0.1:4222"
  // A credential from `moa auth init` (MOA_NATS_* variables) when one is given; none otherwise.
  const auth = yield* Effect.try({ try: () => busAuthFromEnv(), catch: (e) => e as Error })
  return yield* runAgent({
    cluster,
    agent,
    replica: Number(flag("replica") ?? process.env.MOA_REPLICA ?? 0),
    nats: { ...auth, servers: serverList(servers as string | ReadonlyArray<string>), waitOnFirstConnect: process.env.MOA_WAIT_FOR_NATS === "1" },
    drainTimeoutMs: Number(process.env.MOA_DRAIN_TIMEOUT_MS ?? 10_000),
    onReady: (srv) => process.send?.({ type: "ready", agent, id: srv.id, pid: process.pid }),
  })
}).pipe(
  Effect.tapErrorCause((cause) =>
    Effect.sync(() => {
      const e = cause._tag === "Fail" ? cause.error : undefined
      if (e instanceof ClusterFileError) process.stderr.write(`${e.message}\n`)
      else rootLogger().error({ agent, cause: String(e ?? cause) }, "agent failed")
    }),
  ),
)

runMain(program, { disableErrorReporting: true })
