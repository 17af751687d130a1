/**
 * The wire codec: msgpack (msgpackr) in an envelope `{ v: PROTOCOL_VERSION, d: <payload> }`,
 * with the payload encoded/decoded through an Effect Schema. Decoding never throws: it
 * yields a `MoaError` whose `field` names the first offending field.
 */
import { Effect, Either, ParseResult, Schema } from "effect"
import { Packr } from "msgpackr"
import { moaError, type MoaError } from "./errors.ts"

/** Version of the wire contract carried in every envelope. Bump on breaking changes. */
export const PROTOCOL_VERSION = 1

// Plain maps (no msgpackr records) so other languages can read our messages; typed arrays
// travel natively as msgpack extensions.
const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: true })

/** Raw msgpack of any value (no envelope, no schema). */
export const packRaw = (value: unknown): Uint8Array => packr.pack(value)
/** Raw msgpack decode; throws on malformed bytes. */
export const unpackRaw = (bytes: Uint8Array): unknown => packr.unpack(bytes)

/** Path of a parse issue as a dotted field name (`""` for the root). */
const pathOf = (path: ReadonlyArray<PropertyKey>): string => path.map((p) => String(p)).join(".")

/** Format a schema parse error into a MoaError naming the field. */
export const parseErrorToMoa = (err: ParseResult.ParseError, what: string): MoaError => {
  const issues = ParseResult.ArrayFormatter.formatErrorSync(err)
  const first = issues[0]
  const field = first ? pathOf(first.path) : ""
  const message = first
    ? `${what}: ${field ? `field "${field}"` : "value"}: ${first.message}`
    : `${what}: ${err.message}`
  return moaError("BAD_REQUEST", message, {
    field: field || undefined,
    details: issues.length > 1 ? issues.map((i) => ({ field: pathOf(i.path), message: i.message })) : undefined,
  })
}

const validateCache = new WeakMap<object, (u: unknown) => Either.Either<unknown, ParseResult.ParseError>>()
const encodeCache = new WeakMap<object, (u: unknown) => Either.Either<unknown, ParseResult.ParseError>>()

const decoderFor = <A, I>(schema: Schema.Schema<A, I, never>) => {
  let f = validateCache.get(schema)
  if (!f) {
    f = Schema.decodeUnknownEither(schema, { errors: "first", onExcessProperty: "ignore" }) as never
    validateCache.set(schema, f!)
  }
  return f as (u: unknown) => Either.Either<A, ParseResult.ParseError>
}
const encoderFor = <A, I>(schema: Schema.Schema<A, I, never>) => {
  let f = encodeCache.get(schema)
  if (!f) {
    f = Schema.encodeUnknownEither(schema) as never
    encodeCache.set(schema, f!)
  }
  return f as (u: unknown) => Either.Either<I, ParseResult.ParseError>
}

/** Decode an already-unpacked payload through a schema (no envelope). */
export const decodeValueEither = <A, I>(schema: Schema.Schema<A, I, never>, payload: unknown, what = "invalid message"): Either.Either<A, MoaError> =>
  Either.mapLeft(decoderFor(schema)(payload), (e) => parseErrorToMoa(e, what))

/**
 * Envelope metadata that travels beside the payload. `dl` is the caller's deadline
 * (epoch milliseconds): a server may skip work nobody waits for any more.
 */
export interface EnvelopeMeta {
  readonly dl?: number
}

/** The decoded envelope: protocol version, payload, metadata. */
export interface Envelope extends EnvelopeMeta {
  readonly v: number
  readonly d: unknown
}

/** Encode to wire bytes: schema-encode `value`, wrap in the envelope, msgpack it. */
export const encodeEither = <A, I>(schema: Schema.Schema<A, I, never>, value: A, meta?: EnvelopeMeta): Either.Either<Uint8Array, MoaError> =>
  Either.match(encoderFor(schema)(value), {
    onLeft: (e) => {
      const m = parseErrorToMoa(e, "cannot encode message")
      return Either.left(moaError("INTERNAL", m.message, { field: m.field }))
    },
    onRight: (d) => Either.right(packr.pack(meta?.dl !== undefined ? { v: PROTOCOL_VERSION, d, dl: meta.dl } : { v: PROTOCOL_VERSION, d })),
  })

/** Encode or throw (the MoaError). */
export const encodeSync = <A, I>(schema: Schema.Schema<A, I, never>, value: A, meta?: EnvelopeMeta): Uint8Array =>
  Either.getOrThrowWith(encodeEither(schema, value, meta), (e) => e)

/** Unwrap the envelope without decoding the payload. */
export const openEnvelope = (bytes: Uint8Array): Either.Either<Envelope, MoaError> => {
  if (bytes.length === 0) return Either.left(moaError("DECODE_ERROR", "empty message: expected a msgpack envelope { v, d }"))
  let raw: unknown
  try {
    raw = packr.unpack(bytes)
  } catch (e) {
    return Either.left(moaError("DECODE_ERROR", `message is not valid msgpack (${bytes.length} bytes): ${(e as Error).message}`))
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw) || !("v" in raw)) {
    return Either.left(
      moaError("DECODE_ERROR", "message is msgpack but not a moa envelope: expected a map { v: <protocol version>, d: <payload> }", { field: "v" }),
    )
  }
  const env = raw as { v: unknown; d?: unknown }
  if (env.v !== PROTOCOL_VERSION) {
    return Either.left(
      moaError("VERSION_MISMATCH", `protocol version ${String(env.v)} is not supported; this side speaks version ${PROTOCOL_VERSION}`, { field: "v" }),
    )
  }
  return Either.right(env as Envelope)
}

/** Decode wire bytes through a schema; a `MoaError` (DECODE_ERROR / VERSION_MISMATCH / BAD_REQUEST with `field`) on failure. */
export const decodeEither = <A, I>(schema: Schema.Schema<A, I, never>, bytes: Uint8Array, what = "invalid message"): Either.Either<A, MoaError> =>
  Either.flatMap(openEnvelope(bytes), (env) => decodeValueEither(schema, env.d, what))

/** Decode or throw (the MoaError). */
export const decodeSync = <A, I>(schema: Schema.Schema<A, I, never>, bytes: Uint8Array): A =>
  Either.getOrThrowWith(decodeEither(schema, bytes), (e) => e)

/** Effect versions: `encode(schema, value)` / `decode(schema, bytes)`. */
export const encode = <A, I>(schema: Schema.Schema<A, I, never>, value: A): Effect.Effect<Uint8Array, MoaError> =>
  Effect.suspend(() => encodeEither(schema, value))
export const decode = <A, I>(schema: Schema.Schema<A, I, never>, bytes: Uint8Array): Effect.Effect<A, MoaError> =>
  Effect.suspend(() => decodeEither(schema, bytes))
