import { defineAgent, defineCluster } from "@moa/runtime"

/** The no-op agent of the RPC benchmark: answers `generate` with the prompt, through the whole runtime. */
export default defineCluster({
  name: "bench",
  agents: [
    defineAgent({
      name: "noop",
      role: "custom",
      concurrency: 256,
      handlers: {
        generate: (req) => ({ text: req.prompt, tokens: 1, finishReason: "stop" as const }),
      },
    }),
  ],
})
