import { connect } from "@nats-io/transport-node"
import type { NatsConnection } from "@nats-io/nats-core"
import { Chunk, Effect, Either, Layer, ManagedRuntime, Schedule, Schema, Stream } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { encodeSync, decodeSync, MoaError, moaError } from "@moa/protocol"
import {
  addService,
  discover,
  errorBody,
  errorHeaders,
  kvBucket,
  Nats,
  NatsFromConnection,
  NatsLive,
  objectStore,
  publish,
  request,
  requestPromise,
  requestRaw,
  requestStream,
  streamReplier,
  subscribeValid,
} from "../src/index.ts"
import { startNatsServer, type NatsServerHandle } from "../src/testing.ts"

const Ping = Schema.Struct({ n: Schema.Number })
const Pong = Schema.Struct({ n: Schema.Number, by: Schema.String })

describe("bus over a real nats-server", () => {
  let nats: NatsServerHandle
  let rt: ManagedRuntime.ManagedRuntime<Nats, MoaError>
  let server: NatsConnection
  beforeAll(async () => {
    nats = await startNatsServer({ jetstream: true })
    rt = ManagedRuntime.make(NatsLive({ servers: nats.url, name: "bus-test" }))
    server = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 })
    // A hand-written responder: doubles n, refuses n < 0 with a typed error, streams on "count".
    server.subscribe("t.double", {
      callback: (_e, m) => {
        const req = decodeSync(Ping, m.data)
        if (req.n < 0) {
          const err = moaError("BAD_REQUEST", "n must be >= 0", { field: "n" })
          m.respond(errorBody(err), { headers: errorHeaders(err) })
        } else m.respond(encodeSync(Pong, { n: req.n * 2, by: "raw" }))
      },
    })
    server.subscribe("t.count", {
      callback: (_e, m) => {
        const req = decodeSync(Ping, m.data)
        const out = streamReplier(server, m.reply!)
        for (let i = 0; i < req.n; i++) out.chunk(encodeSync(Ping, { n: i }))
        if (req.n === 2) out.fail(moaError("INTERNAL", "broke after two"))
        else out.end()
      },
    })
    await server.flush()
  })
  afterAll(async () => {
    await server?.close()
    await rt?.dispose()
    await nats?.stop()
  })

  it("request/reply decodes the reply through its schema", async () => {
    const r = await rt.runPromise(request("t.double", Ping, Pong, { n: 21 }))
    expect(r).toEqual({ n: 42, by: "raw" })
  })

  it("an error reply becomes a typed MoaError", async () => {
    const r = await rt.runPromise(Effect.either(request("t.double", Ping, Pong, { n: -1 })))
    expect(Either.isLeft(r) && r.left).toMatchObject({ code: "BAD_REQUEST", field: "n" })
  })

  it("no responders is UNAVAILABLE, silence is TIMEOUT", async () => {
    const none = await rt.runPromise(Effect.either(request("t.nobody", Ping, Pong, { n: 1 }, { timeoutMs: 500 })))
    expect(Either.isLeft(none) && none.left.code).toBe("UNAVAILABLE")
    server.subscribe("t.silent", { callback: () => {} })
    await server.flush()
    const silent = await rt.runPromise(Effect.either(request("t.silent", Ping, Pong, { n: 1 }, { timeoutMs: 200 })))
    expect(Either.isLeft(silent) && silent.left.code).toBe("TIMEOUT")
  })

  it("many requests in flight on one connection each get their own reply; a late reply after a TIMEOUT is dropped", async () => {
    const client = await connect({ servers: nats.url })
    try {
      const ns = Array.from({ length: 200 }, (_, i) => i)
      const replies = await Promise.all(ns.map((n) => requestPromise(client, "t.double", Ping, Pong, { n })))
      expect(replies.map((r) => r.n)).toEqual(ns.map((n) => n * 2))
      // answers 300 ms late: the caller has given up by then
      server.subscribe("t.late", { callback: (_e, m) => void setTimeout(() => m.respond(encodeSync(Pong, { n: 0, by: "late" })), 300) })
      await server.flush()
      const late = await requestPromise(client, "t.late", Ping, Pong, { n: 1 }, { timeoutMs: 100 }).catch((e: MoaError) => e)
      expect(late).toMatchObject({ code: "TIMEOUT" })
      expect((late as MoaError).message).toContain("t.late")
      await new Promise((r) => setTimeout(r, 400))
      expect(await requestPromise(client, "t.double", Ping, Pong, { n: 5 })).toEqual({ n: 10, by: "raw" })
      // a short deadline sent after a long one still fires first (one timer serves both)
      server.subscribe("t.hush", { callback: () => {} })
      await server.flush()
      const order: Array<string> = []
      const long = requestPromise(client, "t.hush", Ping, Pong, { n: 1 }, { timeoutMs: 250 }).catch((e: MoaError) => order.push(`long ${e.code}`))
      const short = requestPromise(client, "t.hush", Ping, Pong, { n: 1 }, { timeoutMs: 50 }).catch((e: MoaError) => order.push(`short ${e.code}`))
      await Promise.all([long, short])
      expect(order).toEqual(["short TIMEOUT", "long TIMEOUT"])
      // raw bytes through the same mux; no responders is UNAVAILABLE there too
      const raw = await requestRaw(client, "t.double", encodeSync(Ping, { n: 4 }))
      expect(decodeSync(Pong, raw.data)).toEqual({ n: 8, by: "raw" })
      await expect(requestRaw(client, "t.nobody", new Uint8Array(), { timeoutMs: 500 })).rejects.toMatchObject({ code: "UNAVAILABLE" })
    } finally {
      await client.close()
    }
  })

  it("requests in flight fail with UNAVAILABLE when the connection closes, and later ones at once", async () => {
    server.subscribe("t.never", { callback: () => {} })
    await server.flush()
    const client = await connect({ servers: nats.url })
    const pending = requestPromise(client, "t.never", Ping, Pong, { n: 1 }, { timeoutMs: 10_000 }).catch((e: MoaError) => e)
    await client.flush()
    await client.close()
    expect(await pending).toMatchObject({ code: "UNAVAILABLE" })
    await expect(requestPromise(client, "t.double", Ping, Pong, { n: 1 })).rejects.toMatchObject({ code: "UNAVAILABLE" })
  })

  it("replies and streams come back on the connection's inbox prefix (what a `moa auth` credential may subscribe to)", async () => {
    server.subscribe("t.where", {
      callback: (_e, m) => {
        const by = m.reply ?? ""
        if (decodeSync(Ping, m.data).n === 0) m.respond(encodeSync(Pong, { n: 0, by }))
        else {
          const out = streamReplier(server, by)
          out.chunk(encodeSync(Pong, { n: 1, by }))
          out.end()
        }
      },
    })
    await server.flush()
    const client = await connect({ servers: nats.url, inboxPrefix: "_INBOX_bustest" })
    try {
      const one = await requestPromise(client, "t.where", Ping, Pong, { n: 0 })
      expect(one.by.startsWith("_INBOX_bustest.")).toBe(true)
      const chunks = await Effect.runPromise(
        Stream.runCollect(requestStream("t.where", Ping, Pong, { n: 1 })).pipe(Effect.provide(NatsFromConnection(client))),
      )
      expect(Chunk.toArray(chunks).map((c) => c.by.startsWith("_INBOX_bustest."))).toEqual([true])
    } finally {
      await client.close()
    }
  })

  it("streamed replies end at the end marker or fail with the error", async () => {
    const all = await rt.runPromise(Stream.runCollect(requestStream("t.count", Ping, Ping, { n: 5 })))
    expect(Chunk.toArray(all).map((c) => c.n)).toEqual([0, 1, 2, 3, 4])
    const broken = await rt.runPromise(Effect.either(Stream.runCollect(requestStream("t.count", Ping, Ping, { n: 2 }))))
    expect(Either.isLeft(broken) && broken.left.message).toBe("broke after two")
  })

  it("queue groups share messages; plain subscribers each get all", async () => {
    const got = await rt.runPromise(
      Effect.gen(function* () {
        const a = yield* Effect.fork(Stream.runCollect(subscribeValid("t.q", Ping, { queue: "g" }).pipe(Stream.interruptAfter("400 millis"))))
        const b = yield* Effect.fork(Stream.runCollect(subscribeValid("t.q", Ping, { queue: "g" }).pipe(Stream.interruptAfter("400 millis"))))
        const all = yield* Effect.fork(Stream.runCollect(subscribeValid("t.q", Ping).pipe(Stream.interruptAfter("400 millis"))))
        yield* Effect.sleep("100 millis")
        for (let i = 0; i < 20; i++) yield* publish("t.q", Ping, { n: i })
        const [ra, rb, rall] = [yield* a.await, yield* b.await, yield* all.await]
        const size = (x: typeof ra) => (x._tag === "Success" ? Chunk.size(x.value) : -1)
        return { a: size(ra), b: size(rb), all: size(rall) }
      }),
    )
    expect(got.a + got.b).toBe(20)
    expect(got.all).toBe(20)
  })

  it("services are discoverable through $SRV", async () => {
    const found = await rt.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const svc = yield* addService({ name: "bustest", version: "1.2.3", metadata: { role: "custom" } })
          svc.addEndpoint("hello", { subject: "t.svc.hello", handler: (_e, m) => m.respond(new Uint8Array([1])) })
          return yield* discover({ name: "bustest", waitMs: 300 })
        }),
      ),
    )
    expect(found).toHaveLength(1)
    expect(found[0]).toMatchObject({ name: "bustest", version: "1.2.3", metadata: { role: "custom" } })
    expect(found[0].info?.endpoints.map((e) => e.name)).toEqual(["hello"])
  })

  it("gives access to KV and Object Store", async () => {
    const out = await rt.runPromise(
      Effect.gen(function* () {
        const kv = yield* kvBucket("bus_test")
        yield* Effect.promise(() => kv.put("a", "1"))
        const e = yield* Effect.promise(() => kv.get("a"))
        const os = yield* objectStore("bus_test_obj")
        yield* Effect.promise(() => os.putBlob({ name: "w" }, new Uint8Array([1, 2, 3])))
        const blob = yield* Effect.promise(() => os.getBlob("w"))
        return { kv: e?.string(), blob: Array.from(blob ?? []) }
      }),
    )
    expect(out).toEqual({ kv: "1", blob: [1, 2, 3] })
  })

  it("reconnects after the server restarts", async () => {
    await nats.restart({ hard: true, downMs: 200 })
    const r = await rt.runPromise(
      request("t.double", Ping, Pong, { n: 2 }, { timeoutMs: 1000 }).pipe(
        Effect.retry({ times: 50, schedule: Schedule.spaced("200 millis"), while: (e) => e.code === "TIMEOUT" || e.code === "UNAVAILABLE" }),
      ),
    )
    expect(r.n).toBe(4)
  })
})

describe("NatsLive", () => {
  it("fails with UNAVAILABLE naming the server when nothing listens", async () => {
    const r = await Effect.runPromise(Effect.either(Effect.scoped(Layer.build(NatsLive({ servers: "nats://127.0.0.1:1", timeout: 500 })))))
    expect(Either.isLeft(r) && r.left.code).toBe("UNAVAILABLE")
    expect(Either.isLeft(r) && r.left.message).toContain("127.0.0.1:1")
  })
})
