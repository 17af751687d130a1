/** The bare-NATS side of the RPC benchmark: replies to every request with its own bytes. */
import { connect } from "@nats-io/transport-node"

const url = process.argv[2]
const nc = await connect({ servers: url, noAsyncTraces: true })
nc.subscribe("bench.bare", {
  callback: (_err, m) => {
    m.respond(m.data)
  },
})
await nc.flush()
process.send?.({ type: "ready" })
process.on("SIGTERM", () => void nc.drain().then(() => process.exit(0)))
