/**
 * The `moa` command. To add a command, write it in ./commands/<name>.ts and add it to
 * `commands` below.
 */
import { Command } from "@effect/cli"
// Subpaths, not the package barrel (which loads all of platform-node: seconds on a loaded machine).
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect } from "effect"
import { authCommand } from "./commands/auth.ts"
import { callCommand } from "./commands/call.ts"
import { downCommand } from "./commands/down.ts"
import { evalCommand } from "./commands/eval.ts"
import { generateCommand } from "./commands/generate.ts"
import { routerCommand } from "./commands/router.ts"
import { statusCommand } from "./commands/status.ts"
import { trainCommand } from "./commands/train.ts"
import { tuneCommand } from "./commands/tune.ts"
import { upCommand } from "./commands/up.ts"
import { CliFailure } from "./common.ts"

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const commands: Array<Command.Command<any, any, any, any>> = [
  upCommand,
  downCommand,
  statusCommand,
  callCommand,
  authCommand,
  trainCommand,
  generateCommand,
  evalCommand,
  tuneCommand,
  routerCommand,
  // more commands here (train, generate, eval, tune, …)
]

const moa = Command.make("moa").pipe(
  Command.withDescription("clusters of fine-tuned expert models over NATS"),
  Command.withSubcommands(commands as [Command.Command<any, any, any, any>, ...Array<Command.Command<any, any, any, any>>]),
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
