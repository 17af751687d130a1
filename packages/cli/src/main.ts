/**
 * The `moa` command. To add a command, write it in ./commands/<name>.ts and add one line to
 * `commands` below: its name and a lazy import. Only the command being run is loaded (the
 * model/tune commands pull in TensorFlow.js, which `moa up`/`call`/`status` do not need);
 * `moa --help` and unknown names load them all.
 */
import { Command } from "@effect/cli"
// Subpaths, not the package barrel (which loads all of platform-node: seconds on a loaded machine).
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect } from "effect"
import { CliFailure } from "./common.ts"

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyCommand = Command.Command<any, any, any, any>

const commands: Record<string, () => Promise<AnyCommand>> = {
  up: () => import("./commands/up.ts").then((m) => m.upCommand),
  down: () => import("./commands/down.ts").then((m) => m.downCommand),
  status: () => import("./commands/status.ts").then((m) => m.statusCommand),
  call: () => import("./commands/call.ts").then((m) => m.callCommand),
  auth: () => import("./commands/auth.ts").then((m) => m.authCommand),
  train: () => import("./commands/train.ts").then((m) => m.trainCommand),
  generate: () => import("./commands/generate.ts").then((m) => m.generateCommand),
  eval: () => import("./commands/eval.ts").then((m) => m.evalCommand),
  tune: () => import("./commands/tune.ts").then((m) => m.tuneCommand),
  router: () => import("./commands/router.ts").then((m) => m.routerCommand),
  round: () => import("./commands/round.ts").then((m) => m.roundCommand),
  console: () => import("./commands/console.ts").then((m) => m.consoleCommand),
  // more commands here: name: () => import("./commands/<name>.ts").then((m) => m.<name>Command),
}

const requested = process.argv.slice(2).find((a) => !a.startsWith("-"))
const loaded = await Promise.all(
  requested !== undefined && commands[requested] ? [commands[requested]()] : Object.values(commands).map((load) => load()),
)

const moa = Command.make("moa").pipe(
  Command.withDescription("clusters of fine-tuned expert models over NATS"),
  Command.withSubcommands(loaded as [AnyCommand, ...Array<AnyCommand>]),
)

const cli = Command.run(moa, { name: "moa", version: "0.1.0" })

const program = Effect.suspend(() => cli(process.argv)).pipe(
  Effect.catchIf(
    (e): e is CliFailure => e instanceof CliFailure,
    (e) =>
      Effect.sync(() => {
        process.stderr.write(`${e.message}\n`)
        process.exitCode = e.exitCode ?? 1
      }),
  ),
  Effect.provide(NodeContext.layer),
)

NodeRuntime.runMain(program as Effect.Effect<void, unknown, never>, { disableErrorReporting: false })
