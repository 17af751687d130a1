/**
 * The wire codec: msgpack (msgpackr) in an envelope `{ v: PROTOCOL_VERSION, d: <payload> }`,
 * with the payload encoded/decoded through an Effect Schema. Decoding never throws: it
 * yields a `MoaError` whose `field` names the first offending field.
 */
import { Effect, Either, Option, ParseResult, Schema, SchemaAST } from "effect"
import { Packr } from "msgpackr"
import { moaError, toMoaError, type MoaError } from "./errors.ts"

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

type Check = (u: unknown) => boolean
const noOptions: SchemaAST.ParseOptions = {}

/**
 * A fast accept-only check compiled from a plain schema's AST (structs, records, arrays,
 * unions, literals, keywords and their refinements — the same filter functions Effect runs).
 * It never rejects by itself: a value it does not accept goes through the full Effect decoder,
 * which gives the error naming the field. `undefined` when the AST has parts it does not know.
 */
const compileCheck = (ast: SchemaAST.AST): Check | undefined => {
  switch (ast._tag) {
    case "StringKeyword":
      return (u) => typeof u === "string"
    case "NumberKeyword":
      return (u) => typeof u === "number"
    case "BooleanKeyword":
      return (u) => typeof u === "boolean"
    case "UnknownKeyword":
    case "AnyKeyword":
      return () => true
    case "UndefinedKeyword":
      return (u) => u === undefined
    case "Literal": {
      const lit = ast.literal
      return (u) => u === lit
    }
    case "Refinement": {
      const from = compileCheck(ast.from)
      if (!from) return undefined
      return (u) => from(u) && Option.isNone(ast.filter(u, noOptions, ast))
    }
    case "Union": {
      const members = ast.types.map(compileCheck)
      if (members.some((m) => m === undefined)) return undefined
      const ms = members as Array<Check>
      return (u) => ms.some((m) => m(u))
    }
    case "TupleType": {
      if (ast.elements.length !== 0 || ast.rest.length !== 1) return undefined
      const item = compileCheck(ast.rest[0].type)
      if (!item) return undefined
      return (u) => Array.isArray(u) && u.every(item)
    }
    case "TypeLiteral": {
      if (ast.indexSignatures.length > 1) return undefined
      const props: Array<{ name: string; optional: boolean; check: Check }> = []
      for (const p of ast.propertySignatures) {
        const check = compileCheck(p.type)
        if (!check || typeof p.name !== "string") return undefined
        props.push({ name: p.name, optional: p.isOptional, check })
      }
      let values: Check | undefined
      if (ast.indexSignatures.length === 1) {
        const sig = ast.indexSignatures[0]
        if (sig.parameter._tag !== "StringKeyword" || props.length > 0) return undefined
        values = compileCheck(sig.type)
        if (!values) return undefined
      }
      const vs = values
      return (u) => {
        if (typeof u !== "object" || u === null || Array.isArray(u)) return false
        const o = u as Record<string, unknown>
        for (const p of props) {
          const v = o[p.name]
          if (v === undefined && !(p.name in o)) {
            if (!p.optional) return false
          } else if (!p.check(v)) return false
        }
        if (vs) for (const k in o) if (!vs(o[k])) return false
        return true
      }
    }
    default:
      return undefined
  }
}

type Full = (u: unknown) => Either.Either<unknown, ParseResult.ParseError>
interface Decoder {
  /** Accept-only check compiled from a plain schema (undefined: none, always use `full`). */
  readonly fast: Check | undefined
  /** Effect's decoder: the value (transformed) or the parse error naming the field. */
  readonly full: Full
}
const decoderCache = new WeakMap<object, Decoder>()
const encodeCache = new WeakMap<object, (u: unknown) => Either.Either<unknown, ParseResult.ParseError>>()

const decoderFor = (schema: Schema.Schema<any, any, never>): Decoder => {
  let d = decoderCache.get(schema)
  if (d === undefined) {
    // Plain schemas: accept valid input with the compiled check (unknown extra fields pass
    // through untouched); anything else, and every failure, takes Effect's decoder.
    d = {
      fast: isPlainSchema(schema.ast) ? compileCheck(schema.ast) : undefined,
      full: Schema.decodeUnknownEither(schema, { errors: "first", onExcessProperty: "ignore" }) as Full,
    }
    decoderCache.set(schema, d)
  }
  return d
}
const encoderFor = <A, I>(schema: Schema.Schema<A, I, never>) => {
  let f = encodeCache.get(schema)
  if (!f) {
    f = Schema.encodeUnknownEither(schema) as never
    encodeCache.set(schema, f!)
  }
  return f as (u: unknown) => Either.Either<I, ParseResult.ParseError>
}

/**
 * Check an already-unpacked payload against a schema: the decoded value, or throws the
 * `MoaError` (BAD_REQUEST naming the field). The hot path of the runtime and the bus; the
 * Either forms below wrap it.
 */
export const checkValue = <A, I>(schema: Schema.Schema<A, I, never>, payload: unknown, what = "invalid message"): A => {
  const d = decoderFor(schema)
  if (d.fast !== undefined && d.fast(payload)) return payload as A
  const r = d.full(payload)
  if (Either.isLeft(r)) throw parseErrorToMoa(r.left, what)
  return r.right as A
}

/** Decode an already-unpacked payload through a schema (no envelope). */
export const decodeValueEither = <A, I>(schema: Schema.Schema<A, I, never>, payload: unknown, what = "invalid message"): Either.Either<A, MoaError> => {
  const d = decoderFor(schema)
  if (d.fast !== undefined && d.fast(payload)) return Either.right(payload as A)
  return Either.mapLeft(d.full(payload) as Either.Either<A, ParseResult.ParseError>, (e) => parseErrorToMoa(e, what))
}

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

const plainCache = new WeakMap<object, boolean>()

/**
 * True when a schema has no transformations (its encoded form is its type), so a value can
 * be packed as is. The sender of such a message skips validation: the receiver validates
 * everything at its boundary anyway, and this keeps one schema check per hop, not two.
 */
export const isPlainSchema = (ast: SchemaAST.AST): boolean => {
  const cached = plainCache.get(ast)
  if (cached !== undefined) return cached
  let plain: boolean
  switch (ast._tag) {
    case "Transformation":
    case "Suspend":
      plain = false
      break
    case "Refinement":
      plain = isPlainSchema(ast.from)
      break
    case "Declaration":
      plain = ast.typeParameters.length === 0
      break
    case "TypeLiteral":
      plain = ast.propertySignatures.every((p) => isPlainSchema(p.type)) && ast.indexSignatures.every((i) => isPlainSchema(i.type))
      break
    case "TupleType":
      plain = ast.elements.every((e) => isPlainSchema(e.type)) && ast.rest.every((r) => isPlainSchema(r.type))
      break
    case "Union":
      plain = ast.types.every(isPlainSchema)
      break
    default:
      plain = true
  }
  plainCache.set(ast, plain)
  return plain
}

/**
 * Pack for sending without validating when the schema is plain (see `isPlainSchema`),
 * through `encodeEither` otherwise; throws the `MoaError`. Use on hot paths whose receiver
 * decodes through the same schema.
 */
export const packTrusted = <A, I>(schema: Schema.Schema<A, I, never>, value: A, dl?: number): Uint8Array => {
  if (!isPlainSchema(schema.ast)) return Either.getOrThrowWith(encodeEither(schema, value, dl !== undefined ? { dl } : undefined), (e) => e)
  try {
    return packr.pack(dl !== undefined ? { v: PROTOCOL_VERSION, d: value, dl } : { v: PROTOCOL_VERSION, d: value })
  } catch (e) {
    throw moaError("INTERNAL", `cannot encode message: ${(e as Error).message}`)
  }
}

/** `packTrusted` as an Either. */
export const encodeTrustedEither = <A, I>(schema: Schema.Schema<A, I, never>, value: A, meta?: EnvelopeMeta): Either.Either<Uint8Array, MoaError> => {
  try {
    return Either.right(packTrusted(schema, value, meta?.dl))
  } catch (e) {
    return Either.left(toMoaError(e))
  }
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

/** Unwrap the envelope without decoding the payload; throws the `MoaError` (DECODE_ERROR / VERSION_MISMATCH). */
export const unpackEnvelope = (bytes: Uint8Array): Envelope => {
  if (bytes.length === 0) throw moaError("DECODE_ERROR", "empty message: expected a msgpack envelope { v, d }")
  let raw: unknown
  try {
    raw = packr.unpack(bytes)
  } catch (e) {
    throw moaError("DECODE_ERROR", `message is not valid msgpack (${bytes.length} bytes): ${(e as Error).message}`)
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw) || !("v" in raw)) {
    throw moaError("DECODE_ERROR", "message is msgpack but not a moa envelope: expected a map { v: <protocol version>, d: <payload> }", { field: "v" })
  }
  const env = raw as { v: unknown; d?: unknown; dl?: unknown }
  if (env.v !== PROTOCOL_VERSION) {
    throw moaError("VERSION_MISMATCH", `protocol version ${String(env.v)} is not supported; this side speaks version ${PROTOCOL_VERSION}`, { field: "v" })
  }
  if (env.dl !== undefined && typeof env.dl !== "number") {
    throw moaError("DECODE_ERROR", `envelope deadline "dl" must be a number (epoch ms), got ${typeof env.dl}`, { field: "dl" })
  }
  return env as Envelope
}

/** Unwrap the envelope without decoding the payload. */
export const openEnvelope = (bytes: Uint8Array): Either.Either<Envelope, MoaError> => {
  try {
    return Either.right(unpackEnvelope(bytes))
  } catch (e) {
    return Either.left(toMoaError(e))
  }
}

/** Decode wire bytes through a schema; a `MoaError` (DECODE_ERROR / VERSION_MISMATCH / BAD_REQUEST with `field`) on failure. */
export const decodeEither = <A, I>(schema: Schema.Schema<A, I, never>, bytes: Uint8Array, what = "invalid message"): Either.Either<A, MoaError> => {
  try {
    return Either.right(checkValue(schema, unpackEnvelope(bytes).d, what))
  } catch (e) {
    return Either.left(toMoaError(e))
  }
}

/** Decode or throw (the MoaError). */
export const decodeSync = <A, I>(schema: Schema.Schema<A, I, never>, bytes: Uint8Array, what = "invalid message"): A =>
  checkValue(schema, unpackEnvelope(bytes).d, what)

/** Effect versions: `encode(schema, value)` / `decode(schema, bytes)`. */
export const encode = <A, I>(schema: Schema.Schema<A, I, never>, value: A): Effect.Effect<Uint8Array, MoaError> =>
  Effect.suspend(() => encodeEither(schema, value))
export const decode = <A, I>(schema: Schema.Schema<A, I, never>, bytes: Uint8Array): Effect.Effect<A, MoaError> =>
  Effect.suspend(() => decodeEither(schema, bytes))
