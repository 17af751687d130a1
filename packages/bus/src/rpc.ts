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
  checkValue,
  codeFromStatus,
  decodeEither,
  encodeEither,
  encodeSync,
  MoaError,
  moaError,
  packTrusted,
  timeoutError,
  toMoaError,
  unavailable,
  unpackEnvelope,
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

/** The inbox prefix the connection was configured with (`inboxPrefix`, e.g. from `moa auth`), `_INBOX` by default. */
export const inboxPrefixOf = (nc: NatsConnection): string => (nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix || "_INBOX"

interface Pending {
  readonly resolve: (value: any) => void
  readonly reject: (err: MoaError) => void
  /** Turns the reply into the caller's value (or throws the MoaError); runs on the reply's callback. */
  readonly decode: (msg: Msg) => unknown
  readonly deadline: number
  readonly subject: string
  readonly timeoutMs: number
}

/** How often the reply mux looks for requests past their deadline (a TIMEOUT arrives at most this late). */
const DEADLINE_TICK_MS = 10

/**
 * Request/reply for the hot path: one wildcard subscription `<inbox>.*` per connection, a
 * token per request, and one timer for every deadline. nats.js's `nc.request` does the same
 * multiplexing but also allocates an Error (a stack trace) and a timer per request, ≈ 20 % of
 * a busy client's CPU in the RPC benchmark (docs/bench-rpc.md).
 * "503 no responders" status replies arrive on the inbox like any reply (`errorOf` maps them).
 */
class ReplyMux {
  private readonly prefix: string
  private readonly pending = new Map<string, Pending>()
  private seq = 0
  /** No pending request has a deadline before this (a lower bound; see `tick`). */
  private earliest = Infinity
  private timer: ReturnType<typeof setTimeout> | undefined
  private closedError: MoaError | undefined

  constructor(private readonly nc: NatsConnection) {
    this.prefix = `${createInbox(inboxPrefixOf(nc))}.`
    nc.subscribe(`${this.prefix}*`, {
      callback: (err, msg) => {
        if (err) return this.failAll(unavailable(`reply subscription failed: ${err.message}`))
        const token = msg.subject.slice(this.prefix.length)
        const p = this.pending.get(token)
        if (p === undefined) return // late reply after a timeout, or a duplicate
        this.pending.delete(token)
        let value: unknown
        try {
          value = p.decode(msg)
        } catch (e) {
          return p.reject(toMoaError(e))
        }
        p.resolve(value)
      },
    })
    void nc.closed().then((e) => {
      this.closedError = unavailable(`NATS connection is closed${e ? `: ${e.message}` : ""}`)
      this.failAll(this.closedError)
    })
  }

  request<T>(subject: string, data: Uint8Array, timeoutMs: number, deadline: number, headers: MsgHdrs | undefined, decode: (msg: Msg) => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.closedError) return reject(this.closedError)
      const token = (this.seq++).toString(36)
      try {
        this.nc.publish(subject, data, { reply: this.prefix + token, headers })
      } catch (e) {
        return reject(requestFailure(e, subject, timeoutMs))
      }
      this.pending.set(token, { resolve, reject, decode, deadline, subject, timeoutMs })
      if (deadline < this.earliest) this.earliest = deadline
      if (this.timer === undefined) this.arm()
    })
  }

  private arm() {
    this.timer = setTimeout(() => this.tick(), DEADLINE_TICK_MS)
    this.timer.unref?.()
  }

  private tick() {
    this.timer = undefined
    const now = Date.now()
    // Scan only when the earliest deadline seen may have passed (it can be stale: that request
    // may have been answered); the scan recomputes it from what is still pending.
    if (now >= this.earliest) {
      let earliest = Infinity
      for (const [token, p] of this.pending) {
        if (p.deadline <= now) {
          this.pending.delete(token)
          p.reject(timeoutError(`no reply from ${p.subject} within ${p.timeoutMs} ms`))
        } else if (p.deadline < earliest) earliest = p.deadline
      }
      this.earliest = earliest
    }
    if (this.pending.size > 0) this.arm()
  }

  private failAll(err: MoaError) {
    const ps = [...this.pending.values()]
    this.pending.clear()
    for (const p of ps) p.reject(err)
  }
}

const muxes = new WeakMap<NatsConnection, ReplyMux>()
const muxOf = (nc: NatsConnection): ReplyMux => {
  let m = muxes.get(nc)
  if (m === undefined) {
    if (nc.isClosed()) throw unavailable("NATS connection is closed")
    m = new ReplyMux(nc)
    muxes.set(nc, m)
  }
  return m
}

/**
 * Raw request/reply through the connection's reply mux: bytes out, the reply `Msg` back (no
 * codec, no schema). Rejects with a MoaError: TIMEOUT after `timeoutMs`, UNAVAILABLE when
 * nobody serves `subject` or the connection is closed.
 */
export const requestRaw = (nc: NatsConnection, subject: string, data: Uint8Array, opts: RequestOptions = {}): Promise<Msg> => {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS
  return sendRequest(nc, subject, data, timeoutMs, Date.now() + timeoutMs, opts.headers, (msg) => {
    if (isNoResponders(msg)) throw noResponders(subject)
    return msg
  })
}

const sendRequest = <T>(
  nc: NatsConnection,
  subject: string,
  data: Uint8Array,
  timeoutMs: number,
  deadline: number,
  headers: MsgHdrs | undefined,
  decode: (msg: Msg) => T,
): Promise<T> => {
  let mux: ReplyMux
  try {
    mux = muxOf(nc)
  } catch (e) {
    return Promise.reject(toMoaError(e))
  }
  return mux.request(subject, data, timeoutMs, deadline, headers, decode)
}

/** A "503 no responders" status message (not a moa error reply, which carries its own code header). */
const isNoResponders = (msg: Msg): boolean => {
  const h = msg.headers
  return h !== undefined && h.hasError && h.code === 503 && !h.get(ERROR_CODE_HEADER)
}
const noResponders = (subject: string) => unavailable(`no agent is serving ${subject} (no responders). Is the agent running? Try \`moa status\`.`)

/** Promise form of a typed request (for hot paths and non-Effect callers). Rejects with MoaError. */
export const requestPromise = <Req, Res>(
  nc: NatsConnection,
  subject: string,
  reqSchema: AnySchema<Req>,
  resSchema: AnySchema<Res>,
  value: Req,
  opts: RequestOptions = {},
): Promise<Res> => {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS
  const deadline = Date.now() + timeoutMs
  let bytes: Uint8Array
  try {
    bytes = packTrusted(reqSchema, value, deadline)
  } catch (e) {
    return Promise.reject(toMoaError(e))
  }
  return sendRequest(nc, subject, bytes, timeoutMs, deadline, opts.headers, (msg) => decodeReply(msg, subject, resSchema))
}

/** The value of a reply, or throws the MoaError it carries / INTERNAL for a reply that breaks its schema (the server's fault). */
const decodeReply = <Res>(msg: Msg, subject: string, resSchema: AnySchema<Res>): Res => {
  if (msg.headers) {
    if (isNoResponders(msg)) throw noResponders(subject)
    const err = errorOf(msg)
    if (err) throw err
  }
  const env = unpackEnvelope(msg.data)
  try {
    return checkValue(resSchema, env.d, `invalid reply from ${subject}`)
  } catch (e) {
    const m = toMoaError(e)
    throw m.code === "BAD_REQUEST" ? moaError("INTERNAL", m.message, { field: m.field }) : m
  }
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
      const inbox = createInbox(inboxPrefixOf(nc))
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
