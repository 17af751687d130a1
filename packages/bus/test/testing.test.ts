import { connect } from "@nats-io/transport-node"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { startNatsServer, type NatsServerHandle } from "../src/testing.ts"

describe("startNatsServer", () => {
  let nats: NatsServerHandle
  beforeAll(async () => {
    nats = await startNatsServer({ jetstream: true })
  })
  afterAll(() => nats?.stop())

  it("starts a real server on a free loopback port with JetStream", async () => {
    expect(nats.url).toBe(`nats://127.0.0.1:${nats.port}`)
    const nc = await connect({ servers: nats.url })
    const info = nc.info
    expect(info?.jetstream).toBe(true)
    await nc.close()
  })

  it("restarts on the same port", async () => {
    const before = nats.pid()
    await nats.restart({ hard: true })
    expect(nats.pid()).not.toBe(before)
    const nc = await connect({ servers: nats.url })
    await nc.flush()
    await nc.close()
  })
})
