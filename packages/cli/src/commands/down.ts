/** `moa down [cluster]`: drain and stop a cluster started with `moa up --detach`. */
import { Args, Command, Options } from "@effect/cli"
import { Effect, Option } from "effect"
import { fail } from "../common.ts"
import { isAlive, listStates, removeState, type RunState } from "../state.ts"

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const killIfAlive = (pid: number | undefined, sig: NodeJS.Signals) => {
  if (pid && isAlive(pid)) {
    try {
      process.kill(pid, sig)
    } catch {
      // gone meanwhile
    }
  }
}

/** SIGTERM the supervisor (it drains agents, stops NATS); SIGKILL everything recorded if it takes too long. */
export const stopCluster = async (st: RunState, timeoutMs: number): Promise<"drained" | "killed" | "stale"> => {
  if (!isAlive(st.pid)) {
    // The supervisor is gone: make sure nothing it started survives.
    for (const a of st.agents) killIfAlive(a.pid, "SIGKILL")
    killIfAlive(st.embeddedNats?.pid, "SIGKILL")
    removeState(st.cluster)
    return "stale"
  }
  process.kill(st.pid, "SIGTERM")
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline && isAlive(st.pid)) await sleep(100)
  let result: "drained" | "killed" = "drained"
  if (isAlive(st.pid)) {
    result = "killed"
    killIfAlive(st.pid, "SIGKILL")
  }
  for (const a of st.agents) if (isAlive(a.pid)) ((result = "killed"), killIfAlive(a.pid, "SIGKILL"))
  killIfAlive(st.embeddedNats?.pid, "SIGKILL")
  removeState(st.cluster)
  return result
}

export const downCommand = Command.make(
  "down",
  {
    cluster: Args.text({ name: "cluster" }).pipe(Args.withDescription("cluster name (default: the only one running from this directory)"), Args.optional),
    timeout: Options.integer("timeout").pipe(Options.withDescription("seconds to wait for the drain before killing"), Options.withDefault(30)),
  },
  ({ cluster, timeout }) =>
    Effect.gen(function* () {
      const states = listStates()
      let targets: Array<RunState>
      if (Option.isSome(cluster)) {
        const st = states.find((s) => s.cluster === cluster.value)
        if (!st) return yield* fail(`moa down: no cluster "${cluster.value}" was started from here (looked in .moa/run/); running: ${states.map((s) => s.cluster).join(", ") || "none"}`)
        targets = [st]
      } else {
        if (states.length === 0) return yield* fail("moa down: no cluster was started from this directory (nothing in .moa/run/)")
        if (states.length > 1) return yield* fail(`moa down: several clusters are running (${states.map((s) => s.cluster).join(", ")}); name one`)
        targets = states
      }
      for (const st of targets) {
        const r = yield* Effect.promise(() => stopCluster(st, timeout * 1000))
        process.stdout.write(
          r === "drained"
            ? `cluster "${st.cluster}" drained and stopped\n`
            : r === "killed"
              ? `cluster "${st.cluster}" did not drain within ${timeout} s; killed what was left\n`
              : `cluster "${st.cluster}" was not running any more; cleaned up its leftovers\n`,
        )
      }
    }),
).pipe(Command.withDescription("drain and stop a detached cluster"))
