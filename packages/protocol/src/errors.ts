/**
 * Typed errors with stable codes. A failed request travels back as a NATS service error
 * (headers `Nats-Service-Error` / `Nats-Service-Error-Code` carry the message and the numeric
 * status) plus a msgpack body holding the full `MoaError` (string code, message, field).
 */
import { Schema } from "effect"

/** Stable error codes. Add new ones at the end; never rename. */
export const ErrorCodes = [
  "BAD_REQUEST",
  "DECODE_ERROR",
  "UNKNOWN_VERB",
  "PAYLOAD_TOO_LARGE",
  "TIMEOUT",
  "UNAVAILABLE",
  "OVERLOADED",
  "CANCELLED",
  "NOT_FOUND",
  "VERSION_MISMATCH",
  "INTERNAL",
] as const
export const ErrorCode = Schema.Literal(...ErrorCodes)
export type ErrorCode = typeof ErrorCode.Type

/** Numeric status sent in the `Nats-Service-Error-Code` header (HTTP-like, so generic NATS tools make sense of it). */
export const errorStatus: Record<ErrorCode, number> = {
  BAD_REQUEST: 400,
  DECODE_ERROR: 400,
  UNKNOWN_VERB: 404,
  PAYLOAD_TOO_LARGE: 413,
  TIMEOUT: 408,
  UNAVAILABLE: 503,
  OVERLOADED: 429,
  CANCELLED: 499,
  NOT_FOUND: 404,
  VERSION_MISMATCH: 426,
  INTERNAL: 500,
}

/** Best-effort reverse mapping, used when an error reply carries no moa body (e.g. from another NATS service). */
export const codeFromStatus = (status: number): ErrorCode => {
  switch (status) {
    case 400:
      return "BAD_REQUEST"
    case 404:
      return "UNKNOWN_VERB"
    case 408:
      return "TIMEOUT"
    case 413:
      return "PAYLOAD_TOO_LARGE"
    case 426:
      return "VERSION_MISMATCH"
    case 429:
      return "OVERLOADED"
    case 499:
      return "CANCELLED"
    case 503:
      return "UNAVAILABLE"
    default:
      return "INTERNAL"
  }
}

/**
 * The one error type that crosses the wire. `field` names the offending field (a dotted path
 * like `maxTokens` or `completions.2`) when the problem is in the request.
 */
export class MoaError extends Schema.TaggedError<MoaError>()("MoaError", {
  code: ErrorCode,
  message: Schema.String,
  field: Schema.optional(Schema.String),
  details: Schema.optional(Schema.Unknown),
}) {
  get status(): number {
    return errorStatus[this.code]
  }
  override toString(): string {
    return `${this.code}: ${this.message}`
  }
}

export const moaError = (code: ErrorCode, message: string, extra: { field?: string; details?: unknown } = {}): MoaError =>
  new MoaError({ code, message, ...extra })

export const badRequest = (message: string, field?: string) => moaError("BAD_REQUEST", message, { field })
export const timeoutError = (message: string) => moaError("TIMEOUT", message)
export const unavailable = (message: string) => moaError("UNAVAILABLE", message)
export const internalError = (message: string, details?: unknown) => moaError("INTERNAL", message, { details })

export const isMoaError = (u: unknown): u is MoaError => u instanceof MoaError

/** Turn anything thrown by user code into a MoaError (INTERNAL unless it already is one). */
export const toMoaError = (u: unknown): MoaError => {
  if (u instanceof MoaError) return u
  if (u && typeof u === "object" && (u as { _tag?: unknown })._tag === "MoaError") {
    const e = u as { code?: unknown; message?: unknown; field?: unknown }
    if (typeof e.code === "string" && (ErrorCodes as ReadonlyArray<string>).includes(e.code)) {
      return moaError(e.code as ErrorCode, String(e.message ?? ""), { field: typeof e.field === "string" ? e.field : undefined })
    }
  }
  if (u instanceof Error) return internalError(u.message)
  return internalError(String(u))
}
