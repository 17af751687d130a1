/**
 * An agent served in this process (the same serving core an agent process runs) against a
 * real nats-server: bad input gets typed error replies and the agent keeps serving.
 */
import { connect } from "@nats-io/transport-node"
import type { NatsConnection } from "@nats-io/nats-core"
import { Effect, Exit, Schema, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { encodeSync, GenerateRequest, MoaError, packRaw, PROTOCOL_VERSION } from "@moa/protocol"
import { discoverPromise, errorOf } from "@moa/bus"
import { startNatsServer, type NatsServerHandle } from "@moa/bus/testing"
import { defineAgent, defineCluster, makeClient, startAgent, verb, type AgentClient, type AgentServer } from "../src/index.ts"

const Sum = Schema.Struct({ a: Schema.Number, b: Schema.Number })

const cluster = defineCluster({
  name: "t",
  agents: [
    defineAgent({
      name: "worker",
      role: "expert",
      concurrency: 2,
      maxQueue: 1,
      maxPayload: 4096,
      version: "1.2.3",
      setup: (ctx) => {
        ctx.setBackend("rules")
        ctx.setMetadata("model", "none")
        return { prefix: ">" }
      },
      handlers: {
        // a plain value
        generate: (req, ctx) => ({ text: `${ctx.state.prefix}${req.prompt}`, tokens: 1, finishReason: "stop" as const }),
        // a promise, with schemas
        add: verb({ request: Sum, response: Schema.Struct({ sum: Schema.Number }) }, async (req) => ({ sum: req.a + req.b })),
        // an Effect (failing with a typed error when asked)
        half: verb({ request: Schema.Struct({ n: Schema.Number }), response: Schema.Number }, (req) =>
          req.n % 2 === 0 ? Effect.succeed(req.n / 2) : Effect.fail(new MoaError({ code: "BAD_REQUEST", message: "n must be even", field: "n" })),
        ),
        sleep: async (req: unknown) => {
          await new Promise((r) => setTimeout(r, (req as { ms: number }).ms))
          return { slept: (req as { ms: number }).ms }
        },
        boom: () => {
          throw new Error("kaboom")
        },
        wrong: verb({ request: Schema.Struct({}), response: Schema.Struct({ ok: Schema.Boolean }) }, () => ({ ok: "yes" }) as never),
      },
    }),
    defineAgent({
      name: "streamer",
      role: "expert",
      handlers: {
        generate: async function* (req) {
          for (const [i, w] of req.prompt.split(" ").entries()) yield { index: i, text: w, tokens: i + 1 }
          yield { index: 99, text: "", done: true, finishReason: "stop" as const }
        },
      },
    }),
  ],
})

describe("agent serving", () => {
  let nats: NatsServerHandle
  let scope: Scope.CloseableScope
  let worker: AgentServer
  let nc: NatsConnection
  let client: AgentClient

  beforeAll(async () => {
    nats = await startNatsServer({ jetstream: false })
    scope = Effect.runSync(Scope.make())
    const start = (agent: string) => Effect.runPromise(Scope.extend(startAgent({ cluster, agent, nats: { servers: nats.url } }), scope))
    worker = await start("worker")
    await start("streamer")
    nc = await connect({ servers: nats.url })
    client = makeClient(nc, "t")
  })
  afterAll(async () => {
    await nc?.close()
    if (scope) await Effect.runPromise(Scope.close(scope, Exit.void))
    await nats?.stop()
  })

  const raw = async (verbName: string, body: Uint8Array) => {
    const m = await nc.request(`moa.t.worker.${verbName}`, body, { timeout: 5000 })
    return errorOf(m)
  }

  it("answers values, promises and Effects", async () => {
    expect(await client.call("worker", "generate", { prompt: "hi" })).toEqual({ text: ">hi", tokens: 1, finishReason: "stop" })
    expect(await client.call("worker", "add", { a: 2, b: 3 })).toEqual({ sum: 5 })
    expect(await client.call("worker", "half", { n: 8 })).toBe(4)
    await expect(client.call("worker", "half", { n: 3 })).rejects.toMatchObject({ code: "BAD_REQUEST", field: "n", message: "n must be even" })
  })

  it("garbage bytes: DECODE_ERROR, and the agent keeps serving", async () => {
    const err = await raw("generate", new Uint8Array([0xc1, 0xc1, 0xff, 0x00]))
    expect(err?.code).toBe("DECODE_ERROR")
    expect(await client.call("worker", "add", { a: 1, b: 1 })).toEqual({ sum: 2 })
  })

  it("valid msgpack failing the schema: BAD_REQUEST naming the field", async () => {
    const err = await raw("generate", packRaw({ v: PROTOCOL_VERSION, d: { prompt: "x", temperature: "hot" } }))
    expect(err).toMatchObject({ code: "BAD_REQUEST", field: "temperature" })
    expect(err?.message).toContain("temperature")
    const notEnvelope = await raw("generate", packRaw({ prompt: "x" }))
    expect(notEnvelope?.code).toBe("DECODE_ERROR")
    await expect(client.call("worker", "add", { a: 1 })).rejects.toMatchObject({ code: "BAD_REQUEST", field: "b" })
  })

  it("unknown verb: UNKNOWN_VERB listing the verbs it has", async () => {
    const err = await raw("fly", encodeSync(GenerateRequest, { prompt: "x" }))
    expect(err?.code).toBe("UNKNOWN_VERB")
    expect(err?.message).toContain("generate")
  })

  it("over-size payload: PAYLOAD_TOO_LARGE, then serves again", async () => {
    const err = await raw("generate", encodeSync(GenerateRequest, { prompt: "x".repeat(10_000) }))
    expect(err?.code).toBe("PAYLOAD_TOO_LARGE")
    expect(err?.message).toMatch(/4096/)
    expect(await client.call("worker", "generate", { prompt: "ok" })).toMatchObject({ text: ">ok" })
  })

  it("a throwing handler is INTERNAL; a reply breaking its schema is INTERNAL naming the field", async () => {
    await expect(client.call("worker", "boom", {})).rejects.toMatchObject({ code: "INTERNAL", message: "kaboom" })
    await expect(client.call("worker", "wrong", {})).rejects.toMatchObject({ code: "INTERNAL", field: "ok" })
  })

  it("bounds in-flight work: beyond concurrency + queue it answers OVERLOADED", async () => {
    const calls = Array.from({ length: 6 }, () => client.call("worker", "sleep", { ms: 300 }).then(() => "ok", (e: MoaError) => e.code))
    const results = await Promise.all(calls)
    expect(results.filter((r) => r === "ok")).toHaveLength(3) // 2 running + 1 queued
    expect(results.filter((r) => r === "OVERLOADED")).toHaveLength(3)
    expect(await client.call("worker", "add", { a: 1, b: 2 })).toEqual({ sum: 3 })
  })

  it("streams chunks from an async generator, and folds them for a plain request", async () => {
    const chunks: Array<unknown> = []
    for await (const c of client.stream("streamer", "generate", { prompt: "a b c", stream: true })) chunks.push(c)
    expect(chunks.map((c) => (c as { text: string }).text)).toEqual(["a", "b", "c", ""])
    expect(await client.call("streamer", "generate", { prompt: "a b c" })).toMatchObject({ text: "abc", finishReason: "stop" })
    // a plain handler answers a streaming request with one final chunk
    const one: Array<unknown> = []
    for await (const c of client.stream("worker", "generate", { prompt: "z", stream: true })) one.push(c)
    expect(one).toEqual([{ index: 0, text: ">z", done: true, finishReason: "stop", tokens: 1 }])
  })

  it("answers health and info, and is discoverable through $SRV with its metadata and stats", async () => {
    expect(await client.call("worker", "health", {})).toMatchObject({ status: "ok", agent: "worker", backend: "rules" })
    expect(await client.call("worker", "info", {})).toMatchObject({ cluster: "t", role: "expert", version: "1.2.3", verbs: expect.arrayContaining(["add", "generate"]) })
    const found = await discoverPromise(nc, { name: "worker", waitMs: 300 })
    expect(found).toHaveLength(1)
    expect(found[0].metadata).toMatchObject({ cluster: "t", agent: "worker", role: "expert", version: "1.2.3", backend: "rules", model: "none" })
    const data = found[0].stats?.endpoints?.[0].data as { requests: number; errors: number; p99Ms: number }
    expect(data.requests).toBeGreaterThan(5)
    expect(data.errors).toBeGreaterThan(3)
    expect(worker.stats().verbs.add.requests).toBeGreaterThan(0)
  })
})
