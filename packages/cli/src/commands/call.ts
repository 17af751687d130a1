/** `moa call <agent> <verb> [json]`: one request; prints the reply as JSON. */
import { Args, Command, Options } from "@effect/cli"
import { Effect, Option } from "effect"
import { discoverPromise } from "@moa/bus"
import { makeClient } from "@moa/runtime"
import { CliFailure, resolveTarget, withConnection } from "../common.ts"

export const callCommand = Command.make(
  "call",
  {
    agent: Args.text({ name: "agent" }),
    verb: Args.text({ name: "verb" }),
    json: Args.text({ name: "json" }).pipe(Args.withDescription("the request as JSON (default {})"), Args.optional),
    nats: Options.text("nats").pipe(Options.optional),
    cluster: Options.text("cluster").pipe(Options.withDescription("cluster name (default: the one started here, or found via $SRV)"), Options.optional),
    timeout: Options.integer("timeout").pipe(Options.withDescription("deadline in ms"), Options.withDefault(10_000)),
  },
  ({ agent, verb, json, nats, cluster, timeout }) =>
    Effect.gen(function* () {
      const text = Option.getOrElse(json, () => "{}")
      const req = yield* Effect.try({
        try: () => JSON.parse(text) as unknown,
        catch: (e) => new CliFailure({ message: `moa call: the request is not valid JSON (${(e as Error).message}): ${text}` }),
      })
      const target = resolveTarget(Option.getOrUndefined(nats), Option.getOrUndefined(cluster))
      yield* withConnection(target, (nc) =>
        Effect.gen(function* () {
          let clusterName = target.cluster
          if (!clusterName) {
            const found = yield* Effect.promise(() => discoverPromise(nc, { name: agent, waitMs: 400 }))
            const clusters = [...new Set(found.map((s) => s.metadata.cluster).filter(Boolean))]
            if (clusters.length === 0) return yield* Effect.fail(new CliFailure({ message: `moa call: no agent "${agent}" answered on ${target.natsUrl}; see \`moa status\`` }))
            if (clusters.length > 1) return yield* Effect.fail(new CliFailure({ message: `moa call: agent "${agent}" exists in clusters ${clusters.join(", ")}; pick one with --cluster` }))
            clusterName = clusters[0]
          }
          const client = makeClient(nc, clusterName)
          const streaming = (req as { stream?: unknown })?.stream === true
          if (streaming) {
            yield* Effect.tryPromise({
              try: async () => {
                for await (const chunk of client.stream(agent, verb, req, { timeoutMs: timeout })) process.stdout.write(`${JSON.stringify(chunk)}\n`)
              },
              catch: (e) => new CliFailure({ message: `error ${String(e)}` }),
            })
          } else {
            const reply = yield* Effect.tryPromise({ try: () => client.call(agent, verb, req, { timeoutMs: timeout }), catch: (e) => new CliFailure({ message: `error ${String(e)}` }) })
            process.stdout.write(`${JSON.stringify(reply, null, 2)}\n`)
          }
        }),
      )
    }),
).pipe(Command.withDescription("send one request to an agent and print the reply as JSON"))
