/**
 * Request/reply, publish/subscribe and streamed replies over NATS, all through the codec.
 *
 * Wire conventions:
 * - request and reply bodies are versioned envelopes (see @moa/protocol codec); a request
 *   envelope carries the caller's deadline (`dl`, epoch ms);
 * - a failed reply is a NATS service error: headers `Nats-Service-Error` (message) and
 *   `Nats-Service-Error-Code` (numeric status), body = the encoded `MoaError`;
 * - a streamed reply is a sequence of messages to the request's reply inbox: each chunk
 *   carries header `Moa-Seq: <n>`, the end is an empty message with `Moa-End: 1`, or an
 *   error reply (which also ends the stream).
 */
import { createInbox, headers as makeHeaders, type Msg, type MsgHdrs, type NatsConnection } from "@nats-io/nats-core"
import { Chunk, Effect, Either, Option, Stream } from "effect"
import {
  codeFromStatus,
  decodeEither,
  encodeEither,
  encodeSync,
  encodeTrustedEither,
  MoaError,
  moaError,
  timeoutError,
  toMoaError,
  unavailable,
} from "@moa/protocol"
import type { Schema } from "effect"
import { Nats } from "./connection.ts"

export const ERROR_HEADER = "Nats-Service-Error"
export const ERROR_CODE_HEADER = "Nats-Service-Error-Code"
export const SEQ_HEADER = "Moa-Seq"
export const END_HEADER = "Moa-End"

/** Default request deadline. */
export const DEFAULT_TIMEOUT_MS = 10_000

type AnySchema<A> = Schema.Schema<A, any, never>

/** If `msg` is an error reply, the MoaError it carries. */
export const errorOf = (msg: Msg): MoaError | undefined => {
  const h = msg.headers
  if (!h) return undefined
  const status = h.get(ERROR_CODE_HEADER)
  if (!status) {
    // "503 No Responders" and similar arrive as status headers.
    if (h.hasError && h.code === 503) return unavailable(`no agent is serving ${msg.subject || "this subject"}`)
    return undefined
  }
  if (msg.data.length > 0) {
    const body = decodeEither(MoaError as AnySchema<MoaError>, msg.data)
    if (Either.isRight(body)) return body.right
  }
  return moaError(codeFromStatus(Number(status)), h.get(ERROR_HEADER) || `error ${status}`)
}

/** Headers of an error reply for `err`. */
export const errorHeaders = (err: MoaError): MsgHdrs => {
  const h = makeHeaders()
  h.set(ERROR_CODE_HEADER, String(err.status))
  h.set(ERROR_HEADER, err.message.replace(/[\r\n]+/g, " ").slice(0, 1000))
  return h
}

/** Body of an error reply for `err`. */
export const errorBody = (err: MoaError): Uint8Array => encodeSync(MoaError as AnySchema<MoaError>, err)

/** Send `err` as the reply to `msg` (no-op when there is no reply subject). */
export const respondError = (nc: NatsConnection, reply: string | undefined, err: MoaError): void => {
  if (!reply) return
  try {
    nc.publish(reply, errorBody(err), { headers: errorHeaders(err) })
  } catch {
    // the connection is closing: nobody is left to tell
  }
}

/** Map an exception thrown by nats.js during a request into a MoaError. */
export const requestFailure = (e: unknown, subject: string, timeoutMs: number): MoaError => {
  const err = e as { name?: string; message?: string; isNoResponders?: () => boolean; cause?: { name?: string } }
  const name = err?.name ?? ""
  if (name === "NoRespondersError" || err?.cause?.name === "NoRespondersError" || (typeof err?.isNoResponders === "function" && err.isNoResponders()))
    return unavailable(`no agent is serving ${subject} (no responders). Is the agent running? Try \`moa status\`.`)
  if (name === "TimeoutError" || err?.cause?.name === "TimeoutError" || /timeout/i.test(err?.message ?? ""))
    return timeoutError(`no reply from ${subject} within ${timeoutMs} ms`)
  if (name === "ClosedConnectionError" || name === "DrainingConnectionError") return unavailable(`NATS connection is closed: ${err.message}`)
  return toMoaError(e)
}

export interface RequestOptions {
  /** Deadline for the reply in ms (default 10 s). */
  readonly timeoutMs?: number
  readonly headers?: MsgHdrs
}

/** Promise form of a typed request (for hot paths and non-Effect callers). Rejects with MoaError. */
export const requestPromise = async <Req, Res>(
  nc: NatsConnection,
  subject: string,
  reqSchema: AnySchema<Req>,
  resSchema: AnySchema<Res>,
  value: Req,
  opts: RequestOptions = {},
): Promise<Res> => {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS
  const bytes = encodeTrustedEither(reqSchema, value, { dl: Date.now() + timeoutMs })
  if (Either.isLeft(bytes)) throw bytes.left
  let msg: Msg
  try {
    msg = await nc.request(subject, bytes.right, { timeout: timeoutMs, headers: opts.headers })
  } catch (e) {
    throw requestFailure(e, subject, timeoutMs)
  }
  const err = errorOf(msg)
  if (err) throw err
  const out = decodeEither(resSchema, msg.data, `invalid reply from ${subject}`)
  // A reply that breaks its schema is the server's fault, not the caller's.
  if (Either.isLeft(out)) throw out.left.code === "BAD_REQUEST" ? moaError("INTERNAL", out.left.message, { field: out.left.field }) : out.left
  return out.right
}

/** A typed request with a deadline: encodes `value`, waits for one reply, decodes it. */
export const request = <Req, Res>(
  subject: string,
  reqSchema: AnySchema<Req>,
  resSchema: AnySchema<Res>,
  value: Req,
  opts: RequestOptions = {},
): Effect.Effect<Res, MoaError, Nats> =>
  Effect.flatMap(Nats, ({ nc }) =>
    Effect.tryPromise({
      try: () => requestPromise(nc, subject, reqSchema, resSchema, value, opts),
      catch: (e) => toMoaError(e),
    }),
  )

export interface StreamRequestOptions extends RequestOptions {
  /** Fail if no chunk arrives for this long (default: timeoutMs). */
  readonly idleTimeoutMs?: number
}

/**
 * A request whose reply is a stream of chunks. Each chunk must arrive within
 * `idleTimeoutMs`, the whole stream within `timeoutMs`; ends at the `Moa-End` marker.
 */
export const requestStream = <Req, C>(
  subject: string,
  reqSchema: AnySchema<Req>,
  chunkSchema: AnySchema<C>,
  value: Req,
  opts: StreamRequestOptions = {},
): Stream.Stream<C, MoaError, Nats> =>
  Stream.unwrapScoped(
    Effect.gen(function* () {
      const { nc } = yield* Nats
      const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS * 6
      const idleMs = opts.idleTimeoutMs ?? timeoutMs
      const bytes = yield* Effect.suspend(() => encodeEither(reqSchema, value, { dl: Date.now() + timeoutMs }))
      const inbox = createInbox()
      const sub = yield* Effect.acquireRelease(
        Effect.sync(() => nc.subscribe(inbox)),
        (s) => Effect.sync(() => s.unsubscribe()),
      )
      // Publishing after subscribe: the server cannot answer before we listen.
      yield* Effect.try({
        try: () => nc.publish(subject, bytes, { reply: inbox, headers: opts.headers }),
        catch: (e) => requestFailure(e, subject, timeoutMs),
      })
      const iterator = sub[Symbol.asyncIterator]()
      const deadline = Date.now() + timeoutMs
      const next = (): Promise<Option.Option<C>> =>
        new Promise((resolve, reject) => {
          const wait = Math.max(1, Math.min(idleMs, deadline - Date.now()))
          const t = setTimeout(() => reject(timeoutError(`stream from ${subject} stalled: no chunk within ${wait} ms`)), wait)
          iterator.next().then(
            (r) => {
              clearTimeout(t)
              if (r.done) return reject(unavailable(`stream from ${subject} closed before its end marker`))
              const m = r.value
              const err = errorOf(m)
              if (err) return reject(err)
              if (m.headers?.get(END_HEADER)) return resolve(Option.none())
              if (m.headers?.hasError && m.headers.code === 503)
                return reject(unavailable(`no agent is serving ${subject} (no responders)`))
              const c = decodeEither(chunkSchema, m.data, `invalid stream chunk from ${subject}`)
              if (Either.isLeft(c)) return reject(c.left)
              resolve(Option.some(c.right))
            },
            (e) => {
              clearTimeout(t)
              reject(requestFailure(e, subject, timeoutMs))
            },
          )
        })
      return Stream.repeatEffectOption(
        Effect.tryPromise({ try: next, catch: (e) => Option.some(toMoaError(e)) }).pipe(
          Effect.flatMap(Option.match({ onNone: () => Effect.fail(Option.none()), onSome: (c) => Effect.succeed(c) })),
        ),
      )
    }),
  )

/** Writes a streamed reply: `chunk(bytes)` per piece, then `end()` or `fail(err)`. */
export interface StreamReplier {
  readonly chunk: (bytes: Uint8Array) => void
  readonly end: () => void
  readonly fail: (err: MoaError) => void
}

export const streamReplier = (nc: NatsConnection, reply: string): StreamReplier => {
  let seq = 0
  return {
    chunk: (bytes) => {
      const h = makeHeaders()
      h.set(SEQ_HEADER, String(seq++))
      nc.publish(reply, bytes, { headers: h })
    },
    end: () => {
      const h = makeHeaders()
      h.set(END_HEADER, "1")
      h.set(SEQ_HEADER, String(seq++))
      nc.publish(reply, new Uint8Array(), { headers: h })
    },
    fail: (err) => respondError(nc, reply, err),
  }
}

/** Publish a typed message. */
export const publish = <A>(subject: string, schema: AnySchema<A>, value: A): Effect.Effect<void, MoaError, Nats> =>
  Effect.flatMap(Nats, ({ nc }) =>
    Effect.flatMap(
      Effect.suspend(() => encodeEither(schema, value)),
      (bytes) => Effect.try({ try: () => nc.publish(subject, bytes), catch: (e) => toMoaError(e) }),
    ),
  )

export interface Received<A> {
  readonly subject: string
  /** `Right` when the message decoded, `Left` with the MoaError otherwise (the stream keeps going). */
  readonly value: Either.Either<A, MoaError>
  readonly msg: Msg
}

/**
 * Subscribe as a Stream (unsubscribes when the stream ends). With `queue`, subscribers of
 * the same group share the messages (each goes to one of them).
 */
export const subscribe = <A>(
  subject: string,
  schema: AnySchema<A>,
  opts: { readonly queue?: string; readonly bufferSize?: number } = {},
): Stream.Stream<Received<A>, never, Nats> =>
  Stream.unwrap(
    Effect.map(Nats, ({ nc }) =>
      Stream.async<Received<A>>(
        (emit) => {
          const sub = nc.subscribe(subject, {
            queue: opts.queue,
            callback: (_err, msg) => {
              void emit.single({ subject: msg.subject, value: decodeEither(schema, msg.data), msg })
            },
          })
          return Effect.sync(() => sub.unsubscribe())
        },
        opts.bufferSize ?? 4096,
      ),
    ),
  )

/** Like `subscribe`, dropping messages that fail to decode. */
export const subscribeValid = <A>(subject: string, schema: AnySchema<A>, opts: { readonly queue?: string } = {}): Stream.Stream<A, never, Nats> =>
  subscribe(subject, schema, opts).pipe(Stream.filterMap((r) => Either.getRight(r.value)))

/** Collect a stream into an array (small helper for callers that want all chunks). */
export const collect = <A, E, R>(s: Stream.Stream<A, E, R>): Effect.Effect<Array<A>, E, R> =>
  Effect.map(Stream.runCollect(s), (c) => Chunk.toArray(c))
