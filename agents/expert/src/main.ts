/**
 * Run one model-backed expert without writing a cluster file:
 *
 *   tsx agents/expert/src/main.ts --model <checkpoint-dir> [--name expert] [--cluster moa]
 *       [--nats nats://127.0.0.1:4222] [--adapter name=dir ...] [--default-adapter name]
 *       [--artifacts dir] [--max-adapters 8] [--window-ms 4] [--max-batch 16] [--no-batching]
 *       [--backend native|wasm|cpu|tensorflow] [--replica 0]
 *
 * Inside a cluster file use `defineExpert` from @moa/expert instead (docs/expert.md); `moa up`
 * then starts it like any other agent.
 */
import type { ExpertOptions } from "@moa/expert"
import { programArgs } from "@moa/runtime/args"

const USAGE =
  "usage: moa-expert --model <checkpoint-dir> [--name expert] [--cluster moa] [--nats URL] [--adapter name=dir ...] [--default-adapter name] " +
  "[--artifacts dir] [--max-adapters N] [--window-ms MS] [--max-batch N] [--no-batching] [--backend native|wasm|cpu|tensorflow] [--replica N]\n"

const { args, die, flag, num } = programArgs("moa-expert", USAGE)
const model = flag("model") ?? process.env.MOA_EXPERT_MODEL ?? die("--model <checkpoint-dir> is required (a folder with config.json, model.safetensors, tokenizer.json)")
const adapters: Record<string, string> = {}
args.forEach((a, i) => {
  if (a !== "--adapter") return
  const spec = args[i + 1] ?? ""
  const eq = spec.indexOf("=")
  if (eq <= 0) die(`--adapter expects name=dir, got ${JSON.stringify(spec)}`)
  adapters[spec.slice(0, eq)] = spec.slice(eq + 1)
})
const name = flag("name") ?? "expert"
const windowMs = num("window-ms")
const maxBatch = num("max-batch")
const opts: ExpertOptions = {
  name,
  model,
  adapters,
  defaultAdapter: flag("default-adapter"),
  artifacts: flag("artifacts"),
  maxLoadedAdapters: num("max-adapters"),
  backend: flag("backend") as ExpertOptions["backend"],
  batching: args.includes("--no-batching") ? false : { ...(windowMs !== undefined ? { windowMs } : {}), ...(maxBatch !== undefined ? { maxBatch } : {}) },
}
// heavy imports (tfjs, NATS, Effect) only once the arguments are known to be good
const [{ NodeRuntime }, { Effect }, { serverList }, { defineCluster, runAgent }, { defineExpert }] = await Promise.all([
  import("@effect/platform-node"),
  import("effect"),
  import("@moa/bus"),
  import("@moa/runtime"),
  import("@moa/expert"),
])
const cluster = defineCluster({ name: flag("cluster") ?? process.env.MOA_CLUSTER ?? "moa", agents: [defineExpert(opts)] })

NodeRuntime.runMain(
  runAgent({
    cluster,
    agent: name,
    replica: Number(flag("replica") ?? 0),
    nats: { servers: serverList(flag("nats") ?? process.env.MOA_NATS_URL ?? "nats://127.0.0.1:4222") },
    onReady: (srv) => {
      process.stdout.write(`expert ${name} ready (${srv.id}) on moa.${cluster.name}.${name}.<verb>\n`)
      process.send?.({ type: "ready", agent: name, id: srv.id, pid: process.pid })
    },
  }).pipe(Effect.tapErrorCause((cause) => Effect.sync(() => process.stderr.write(`moa-expert: ${String(cause)}\n`)))),
  { disableErrorReporting: true },
)
