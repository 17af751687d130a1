/**
 * Turning a credential written by `moa auth init` into NATS connection options. An agent (or
 * the bus layer on its behalf) spreads the result into `connect({ servers, ...auth })`.
 *
 * Environment (what `env/<user>.env` sets):
 *   MOA_NATS_USER             connection name shown in server logs
 *   MOA_NATS_NKEY_SEED_FILE   nkey seed file (creds/<user>.nk)
 *   MOA_NATS_INBOX_PREFIX     `_INBOX_<user>`: the only inbox this credential may subscribe to
 *   MOA_NATS_CA, MOA_NATS_CERT, MOA_NATS_KEY   TLS: CA, client certificate and key
 */
import { nkeyAuthenticator, type Authenticator, type TlsOptions } from "@nats-io/nats-core"
import { readFileSync } from "node:fs"

export interface NatsCredential {
  readonly user?: string
  readonly seedFile?: string
  readonly inboxPrefix?: string
  readonly caFile?: string
  readonly certFile?: string
  readonly keyFile?: string
}

export interface NatsAuthOptions {
  name?: string
  authenticator?: Authenticator
  inboxPrefix?: string
  tls?: TlsOptions
}

const readOrExplain = (path: string, what: string): string => {
  try {
    return readFileSync(path, "utf8")
  } catch (e) {
    throw new Error(`${what} ${path} cannot be read (${(e as Error).message}); run \`moa auth init\` and point MOA_NATS_* at its files`)
  }
}

/** Connection options for one credential (all fields optional: no credential → {}). */
export const natsAuthOptions = (c: NatsCredential): NatsAuthOptions => {
  const o: NatsAuthOptions = {}
  if (c.user) o.name = c.user
  if (c.seedFile) {
    const seed = readOrExplain(c.seedFile, "nkey seed file").trim()
    if (!/^SU[A-Z2-7]{56}$/.test(seed)) throw new Error(`nkey seed file ${c.seedFile} does not hold a user seed (a line starting with "SU")`)
    o.authenticator = nkeyAuthenticator(new TextEncoder().encode(seed))
  }
  if (c.inboxPrefix) o.inboxPrefix = c.inboxPrefix
  if (c.caFile || c.certFile || c.keyFile) {
    if ((c.certFile && !c.keyFile) || (!c.certFile && c.keyFile)) throw new Error("TLS: a client certificate needs its key, and a key its certificate (MOA_NATS_CERT + MOA_NATS_KEY)")
    o.tls = {
      ...(c.caFile ? { ca: readOrExplain(c.caFile, "TLS CA file") } : {}),
      ...(c.certFile ? { cert: readOrExplain(c.certFile, "TLS certificate file") } : {}),
      ...(c.keyFile ? { key: readOrExplain(c.keyFile, "TLS key file") } : {}),
    }
  }
  return o
}

/** `natsAuthOptions` from MOA_NATS_* environment variables. */
export const natsAuthFromEnv = (env: Record<string, string | undefined> = process.env): NatsAuthOptions =>
  natsAuthOptions({
    user: env.MOA_NATS_USER,
    seedFile: env.MOA_NATS_NKEY_SEED_FILE,
    inboxPrefix: env.MOA_NATS_INBOX_PREFIX,
    caFile: env.MOA_NATS_CA,
    certFile: env.MOA_NATS_CERT,
    keyFile: env.MOA_NATS_KEY,
  })

/**
 * The same credential shaped as `@moa/bus` `NatsOptions` fields (`inboxPrefix` goes through
 * `extra`): `NatsLive({ servers, ...busAuthFromEnv() })`.
 */
export const busAuthFromEnv = (
  env: Record<string, string | undefined> = process.env,
): { name?: string; authenticator?: Authenticator; tls?: TlsOptions; extra?: { inboxPrefix: string } } => {
  const { inboxPrefix, ...rest } = natsAuthFromEnv(env)
  return { ...rest, ...(inboxPrefix ? { extra: { inboxPrefix } } : {}) }
}
