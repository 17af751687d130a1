/** The benchmark's cluster: the same checkpoint served with micro-batching on and off. */
import { defineCluster } from "@moa/runtime"
import { defineExpert } from "../src/index.ts"

const model = process.env.MOA_BENCH_MODEL ?? "missing-MOA_BENCH_MODEL"
const art = process.env.MOA_BENCH_ARTIFACTS ?? ".moa/bench-expert"

export default defineCluster({
  name: "bench",
  agents: [
    defineExpert({ name: "batched", model, artifacts: `${art}/batched`, batching: { windowMs: 4, maxBatch: 16 } }),
    defineExpert({ name: "single", model, artifacts: `${art}/single`, batching: false }),
  ],
})
