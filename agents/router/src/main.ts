// The router agent program.
//   tsx agents/router/src/main.ts --cluster demo [--nats nats://127.0.0.1:4222] [--name router]
//        [--mode moe|moa|self-moa|single] [--deadline-ms 10000] [--experts add,sort,…]
// Environment: MOA_NATS_URL, MOA_CLUSTER (flags win).
import { parseArgs } from "node:util"
import type { RouteMode } from "@moa/router"

const { values } = parseArgs({
  options: {
    nats: { type: "string" },
    cluster: { type: "string" },
    name: { type: "string" },
    mode: { type: "string" },
    "deadline-ms": { type: "string" },
    experts: { type: "string" },
  },
})
const fail = (msg: string): never => {
  process.stderr.write(`router: ${msg}\n`)
  process.exit(2)
}
const nats = values.nats || process.env.MOA_NATS_URL || fail("no NATS URL: pass --nats nats://host:4222 or set MOA_NATS_URL")
const cluster = values.cluster || process.env.MOA_CLUSTER || fail("no cluster: pass --cluster <name> or set MOA_CLUSTER")
const modes = ["single", "moe", "moa", "self-moa"]
if (values.mode !== undefined && !modes.includes(values.mode)) fail(`--mode must be one of ${modes.join(", ")}, got "${values.mode}"`)
const deadlineMs = values["deadline-ms"] === undefined ? undefined : Number(values["deadline-ms"])
if (deadlineMs !== undefined && !(deadlineMs > 0)) fail(`--deadline-ms must be a positive number of milliseconds, got "${values["deadline-ms"]}"`)

// imported after the flags are checked: loading tfjs takes a moment
const { startRouterAgent } = await import("@moa/router")
const agent = await startRouterAgent({
  nats,
  cluster,
  name: values.name,
  mode: values.mode as RouteMode | undefined,
  deadlineMs,
  experts: values.experts?.split(",").filter(Boolean),
  log: (line) => process.stdout.write(`[router] ${line}\n`),
})
const bye = async () => {
  await agent.stop()
  process.exit(0)
}
process.on("SIGTERM", bye)
process.on("SIGINT", bye)
process.stdout.write("ready\n")
