/**
 * One model-backed expert: a tiny GPT (checkpoint in ./model, made by build.ts) that reverses
 * short words.
 *
 *   npm run moa -- up examples/tiny-expert/cluster.ts
 *   npm run moa -- call rev generate '{"prompt":"rev abc","temperature":0}'
 *   npm run moa -- call rev model-info '{}'
 *   npm run moa -- up examples/tiny-expert/cluster.ts --demo   (asks the calls of `demo` below, then stops)
 */
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { defineCluster } from "@moa/runtime"
import { defineExpert } from "@moa/expert"

const here = path.dirname(fileURLToPath(import.meta.url))

export default defineCluster({
  name: "tiny",
  agents: [
    defineExpert({
      name: "rev",
      model: path.join(here, "model"),
      artifacts: path.join(here, "..", "..", ".moa", "experts", "rev"),
      maxLoadedAdapters: 4,
    }),
  ],
})

/** What `moa up examples/tiny-expert/cluster.ts --demo` asks once the cluster is up. */
export const demo = [
  { agent: "rev", verb: "generate", request: { prompt: "rev abc", temperature: 0, maxTokens: 8 } },
  { agent: "rev", verb: "generate", request: { prompt: "rev hgfe", temperature: 0, maxTokens: 8, stream: true }, stream: true },
  { agent: "rev", verb: "score", request: { prompt: "rev abc", completions: ["cba", "abc"] } },
  { agent: "rev", verb: "adapters-list", request: {} },
]
