/**
 * `moa auth init`: everything a secured deployment needs, in one folder.
 *
 * ```
 * <out>/
 *   auth.conf              accounts + one nkey user per credential with its role's permissions
 *   tls.conf               client-port TLS block (mutual TLS) — include it from a server config
 *   nats-server.conf       a ready single-server config including both (JetStream on)
 *   roles.json             manifest: user, role, public key, files, inbox prefix
 *   creds/<user>.nk        nkey seed (0600) — the secret an agent connects with
 *   env/<user>.env         MOA_NATS_* variables for that agent (see packages/bus/src/auth.ts)
 *   tls/ca.pem …           CA, server cert (also used on routes), client-<user>.pem per credential
 * ```
 */
import { createUser } from "@nats-io/nkeys"
import { chmodSync, existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs"
import { isAbsolute, join, resolve } from "node:path"
import { renderAuthConfig, renderServerConfig, renderTlsBlock, type UserKey } from "./nats-config.ts"
import { generatePki, type PkiFiles } from "./pki.ts"
import { inboxPrefixFor, normalizeSpec, userName, type ClusterSecuritySpec, type RoleKind } from "./roles.ts"

export interface AuthInitOptions extends ClusterSecuritySpec {
  /** Output folder (created; must be empty or missing unless `force`). */
  readonly out: string
  /** Make TLS certificates (default true). */
  readonly tls?: boolean
  /** Extra DNS names / IPs the servers are reached by (certificate SANs). */
  readonly dnsNames?: ReadonlyArray<string>
  readonly ipAddresses?: ReadonlyArray<string>
  /**
   * Where `<out>` is seen by the nats-server that reads the configs (e.g. `/etc/nats/moa`
   * inside a container). Default: the absolute path of `out`.
   */
  readonly serverPath?: string
  /** Where agents see `<out>` (paths written into env/<user>.env), e.g. `/run/moa` in a container. Default: `out`. */
  readonly clientPath?: string
  readonly force?: boolean
}

export interface CredentialInfo {
  readonly user: string
  readonly kind: RoleKind
  readonly name: string
  readonly publicKey: string
  readonly seedFile: string
  readonly envFile: string
  readonly inboxPrefix: string
  readonly certFile?: string
  readonly keyFile?: string
}

export interface AuthInitResult {
  readonly out: string
  readonly authConf: string
  readonly tlsConf?: string
  readonly serverConf: string
  readonly manifest: string
  readonly caFile?: string
  readonly pki?: PkiFiles
  readonly credentials: ReadonlyArray<CredentialInfo>
}

const writeSecret = (path: string, text: string) => {
  writeFileSync(path, text, { mode: 0o600 })
  chmodSync(path, 0o600)
}

export const authInit = (o: AuthInitOptions): AuthInitResult => {
  const spec = normalizeSpec(o)
  const out = resolve(o.out)
  if (existsSync(out) && readdirSync(out).length > 0 && !o.force) {
    throw new Error(`moa auth init: ${out} is not empty; refusing to overwrite credentials (choose another --out or pass --force)`)
  }
  const serverPath = o.serverPath ?? out
  if (!isAbsolute(serverPath)) throw new Error(`moa auth init: --server-path must be absolute (got ${JSON.stringify(serverPath)})`)
  const clientPath = o.clientPath ?? out
  if (!isAbsolute(clientPath)) throw new Error(`moa auth init: --client-path must be absolute (got ${JSON.stringify(clientPath)})`)
  const cp = (p: string) => join(clientPath, p.slice(out.length + 1))
  mkdirSync(join(out, "creds"), { recursive: true, mode: 0o700 })
  mkdirSync(join(out, "env"), { recursive: true })

  const users: Array<UserKey & { seed: string }> = spec.roles.map((role) => {
    const kp = createUser()
    return { role, publicKey: kp.getPublicKey(), seed: new TextDecoder().decode(kp.getSeed()) }
  })
  const withTls = o.tls ?? true
  const pki = withTls
    ? generatePki({
        dir: join(out, "tls"),
        dnsNames: ["localhost", ...(o.dnsNames ?? [])],
        ipAddresses: ["127.0.0.1", "::1", ...(o.ipAddresses ?? [])],
        clients: users.map((u) => userName(u.role)),
      })
    : undefined

  const credentials: Array<CredentialInfo> = users.map((u) => {
    const user = userName(u.role)
    const seedFile = join(out, "creds", `${user}.nk`)
    writeSecret(seedFile, `${u.seed}\n`)
    const envFile = join(out, "env", `${user}.env`)
    const client = pki?.clients[user]
    const env = [
      `# moa credential ${user} (${u.role.kind}); give this file only to that agent`,
      `MOA_NATS_USER=${user}`,
      `MOA_NATS_NKEY_SEED_FILE=${cp(seedFile)}`,
      `MOA_NATS_INBOX_PREFIX=${inboxPrefixFor(user)}`,
      ...(pki && client ? [`MOA_NATS_CA=${cp(pki.caFile)}`, `MOA_NATS_CERT=${cp(client.certFile)}`, `MOA_NATS_KEY=${cp(client.keyFile)}`] : []),
    ]
    writeSecret(envFile, env.join("\n") + "\n")
    return {
      user,
      kind: u.role.kind,
      name: u.role.name,
      publicKey: u.publicKey,
      seedFile,
      envFile,
      inboxPrefix: inboxPrefixFor(user),
      ...(client ? { certFile: client.certFile, keyFile: client.keyFile } : {}),
    }
  })

  const authConf = join(out, "auth.conf")
  writeFileSync(authConf, renderAuthConfig(spec, users))
  const sp = (p: string) => join(serverPath, p.slice(out.length + 1))
  let tlsConf: string | undefined
  if (pki) {
    tlsConf = join(out, "tls.conf")
    writeFileSync(
      tlsConf,
      "# moa: client-port TLS (mutual: clients present a certificate from the same CA)\n" +
        renderTlsBlock({ certFile: sp(pki.serverCertFile), keyFile: sp(pki.serverKeyFile), caFile: sp(pki.caFile), verify: true }) +
        "\n",
    )
  }
  const serverConf = join(out, "nats-server.conf")
  writeFileSync(
    serverConf,
    renderServerConfig({
      serverName: `moa-${spec.cluster}-1`,
      jetstream: { storeDir: "/var/lib/moa/jetstream" },
      includes: ["auth.conf", ...(tlsConf ? ["tls.conf"] : [])],
    }),
  )
  const manifest = join(out, "roles.json")
  writeFileSync(
    manifest,
    JSON.stringify(
      { cluster: spec.cluster, resources: spec.resources, serviceNames: spec.serviceNames, caFile: pki?.caFile, credentials },
      null,
      2,
    ) + "\n",
  )
  return { out, authConf, tlsConf, serverConf, manifest, caFile: pki?.caFile, pki, credentials }
}
