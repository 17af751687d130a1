import { Either, Schema } from "effect"
import { Packr } from "msgpackr"
import { describe, expect, it } from "vitest"
import {
  decodeEither,
  encodeSync,
  eventSubject,
  GenerateRequest,
  GenerateResponse,
  MoaError,
  PROTOCOL_VERSION,
  packRaw,
  parseVerbSubject,
  resolveGenerate,
  ScoreRequest,
  toMoaError,
  unpackRaw,
  verbSubject,
  checkName,
} from "../src/index.ts"

const left = <A>(e: Either.Either<A, MoaError>): MoaError => {
  if (Either.isRight(e)) throw new Error(`expected a failure, got ${JSON.stringify(e.right)}`)
  return e.left
}

describe("codec", () => {
  it("round-trips a generate request inside a versioned envelope", () => {
    const req: GenerateRequest = { prompt: "hi", maxTokens: 8, temperature: 0.7, topK: 40, topP: 0.9, stop: ["\n"], stream: true, adapter: "math-v2", seed: 7 }
    const bytes = encodeSync(GenerateRequest, req)
    expect(unpackRaw(bytes)).toMatchObject({ v: PROTOCOL_VERSION, d: { prompt: "hi" } })
    expect(decodeEither(GenerateRequest, bytes)).toEqual(Either.right(req))
  })

  it("fills generate defaults", () => {
    expect(resolveGenerate({ prompt: "x" })).toMatchObject({ maxTokens: 64, temperature: 1, stream: false, stop: [] })
  })

  it("carries typed arrays natively", () => {
    const S = Schema.Struct({ w: Schema.instanceOf(Float32Array) })
    const out = decodeEither(S, encodeSync(S, { w: new Float32Array([1.5, -2]) }))
    expect(Either.isRight(out) && Array.from(out.right.w)).toEqual([1.5, -2])
  })

  it("garbage bytes give DECODE_ERROR", () => {
    const e = left(decodeEither(GenerateRequest, new Uint8Array([0xc1, 0xff, 0x00, 0x13])))
    expect(e.code).toBe("DECODE_ERROR")
    expect(e.message).toMatch(/not valid msgpack/)
  })

  it("empty bytes give DECODE_ERROR", () => {
    expect(left(decodeEither(GenerateRequest, new Uint8Array())).code).toBe("DECODE_ERROR")
  })

  it("msgpack that is not an envelope gives DECODE_ERROR naming v", () => {
    const e = left(decodeEither(GenerateRequest, packRaw({ prompt: "hi" })))
    expect(e.code).toBe("DECODE_ERROR")
    expect(e.field).toBe("v")
  })

  it("another protocol version gives VERSION_MISMATCH", () => {
    const e = left(decodeEither(GenerateRequest, packRaw({ v: 99, d: { prompt: "hi" } })))
    expect(e.code).toBe("VERSION_MISMATCH")
  })

  it("valid msgpack failing the schema names the field", () => {
    const e = left(decodeEither(GenerateRequest, packRaw({ v: PROTOCOL_VERSION, d: { prompt: "hi", maxTokens: -3 } })))
    expect(e.code).toBe("BAD_REQUEST")
    expect(e.field).toBe("maxTokens")
    expect(e.message).toContain("maxTokens")

    const missing = left(decodeEither(GenerateRequest, packRaw({ v: PROTOCOL_VERSION, d: { maxTokens: 3 } })))
    expect(missing.field).toBe("prompt")

    const nested = left(decodeEither(ScoreRequest, packRaw({ v: PROTOCOL_VERSION, d: { prompt: "p", completions: ["a", 3] } })))
    expect(nested.field).toBe("completions.1")
  })

  it("round-trips a MoaError as the error body", () => {
    const err = new MoaError({ code: "UNKNOWN_VERB", message: "no verb x", field: "verb" })
    const back = decodeEither(MoaError, encodeSync(MoaError, err))
    expect(Either.isRight(back) && back.right).toBeInstanceOf(MoaError)
    expect(Either.isRight(back) && back.right.code).toBe("UNKNOWN_VERB")
    expect(err.status).toBe(404)
    expect(toMoaError(new Error("boom")).code).toBe("INTERNAL")
  })

  it("refuses to encode a response that breaks its own schema", () => {
    expect(() => encodeSync(GenerateResponse, { text: "x", tokens: -1, finishReason: "stop" })).toThrow(MoaError)
  })

  it("is readable by a plain msgpack decoder (no records)", () => {
    const plain = new Packr({ useRecords: false })
    expect(plain.unpack(encodeSync(GenerateRequest, { prompt: "x" }))).toEqual({ v: 1, d: { prompt: "x" } })
  })
})

describe("subjects", () => {
  it("builds and parses verb and event subjects", () => {
    expect(verbSubject("demo", "echo", "generate")).toBe("moa.demo.echo.generate")
    expect(parseVerbSubject("moa.demo.echo.generate")).toEqual({ cluster: "demo", agent: "echo", verb: "generate" })
    expect(eventSubject("demo", "crash")).toBe("moa.demo.events.crash")
    expect(eventSubject("demo", ">")).toBe("moa.demo.events.>")
  })
  it("refuses names that are unsafe as subject tokens", () => {
    expect(() => verbSubject("demo", "a.b", "x")).toThrow(/may only contain/)
    expect(checkName("bad name", "agent name")).toMatch(/agent name "bad name"/)
    expect(checkName("ok_name-1")).toBeUndefined()
  })
})

describe("fast validation path", () => {
  it("accepts and refuses exactly what Effect Schema does", async () => {
    const { Schema } = await import("effect")
    const { decodeValueEither, AgentInfo, ScoreRequest } = await import("../src/index.ts")
    const cases: Array<[Schema.Schema<any, any, never>, unknown]> = [
      [GenerateRequest, { prompt: "x" }],
      [GenerateRequest, { prompt: "x", maxTokens: 0 }],
      [GenerateRequest, { prompt: "x", maxTokens: 1.5 }],
      [GenerateRequest, { prompt: "x", topP: 0 }],
      [GenerateRequest, { prompt: "x", topP: 1, stop: ["a", "b"] }],
      [GenerateRequest, { prompt: "x", stop: ["a", 1] }],
      [GenerateRequest, { prompt: "x", stream: undefined }],
      [GenerateRequest, { prompt: 3 }],
      [GenerateRequest, ["x"]],
      [GenerateRequest, null],
      [ScoreRequest, { prompt: "p", completions: [] }],
      [ScoreRequest, { prompt: "p", completions: ["a"] }],
      [AgentInfo, { cluster: "c", agent: "a", role: "r", version: "1", backend: "b", id: "i", replica: 0, replicas: 1, pid: 1, host: "h", startedAt: "t", verbs: [], concurrency: 1, maxPayload: 1, protocol: 1, metadata: { a: "b" } }],
      [AgentInfo, { cluster: "c", agent: "a", role: "r", version: "1", backend: "b", id: "i", replica: 0, replicas: 1, pid: 1, host: "h", startedAt: "t", verbs: [], concurrency: 1, maxPayload: 1, protocol: 1, metadata: { a: 1 } }],
    ]
    for (const [schema, value] of cases) {
      expect([value, Either.isRight(decodeValueEither(schema, value))]).toEqual([value, Schema.is(schema)(value)])
    }
  })
})

describe("throwing forms (the hot path of the bus and the runtime)", () => {
  it("decodeSync / checkValue / unpackEnvelope / packTrusted throw the same MoaErrors the Either forms return", async () => {
    const { checkValue, decodeSync, packTrusted, unpackEnvelope, decodeValueEither, openEnvelope } = await import("../src/index.ts")
    const thrown = (f: () => unknown): MoaError => {
      try {
        f()
      } catch (e) {
        return e as MoaError
      }
      throw new Error("expected a throw")
    }
    const bad = packRaw({ v: PROTOCOL_VERSION, d: { prompt: "hi", temperature: "hot" } })
    const t = thrown(() => decodeSync(GenerateRequest, bad, 'bad "generate" request'))
    expect(t).toBeInstanceOf(MoaError)
    expect({ code: t.code, field: t.field, message: t.message }).toEqual({
      code: "BAD_REQUEST",
      field: "temperature",
      message: left(decodeEither(GenerateRequest, bad, 'bad "generate" request')).message,
    })
    expect(t.message).toContain('field "temperature"')
    const v = thrown(() => checkValue(ScoreRequest, { prompt: "p", completions: ["a", 3] }))
    expect(v.field).toBe(left(decodeValueEither(ScoreRequest, { prompt: "p", completions: ["a", 3] })).field)
    expect(thrown(() => unpackEnvelope(new Uint8Array([0xc1, 0xff]))).code).toBe(left(openEnvelope(new Uint8Array([0xc1, 0xff]))).code)
    expect(thrown(() => unpackEnvelope(packRaw({ v: 2, d: 1 }))).code).toBe("VERSION_MISMATCH")
    const dl = thrown(() => unpackEnvelope(packRaw({ v: PROTOCOL_VERSION, d: { prompt: "x" }, dl: "soon" })))
    expect({ code: dl.code, field: dl.field }).toEqual({ code: "DECODE_ERROR", field: "dl" })
    // valid values pass through; the deadline travels in the envelope
    const bytes = packTrusted(GenerateRequest, { prompt: "hi", maxTokens: 3 }, 1234)
    expect(unpackEnvelope(bytes)).toEqual({ v: PROTOCOL_VERSION, d: { prompt: "hi", maxTokens: 3 }, dl: 1234 })
    expect(decodeSync(GenerateRequest, bytes)).toEqual({ prompt: "hi", maxTokens: 3 })
    // a value msgpack cannot carry is INTERNAL
    expect(thrown(() => packTrusted(Schema.Unknown, { s: Symbol("x") } as unknown)).code).toBe("INTERNAL")
  })
})
