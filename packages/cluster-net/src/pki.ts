/**
 * A small private PKI for one moa deployment, made with the machine's `openssl`: a CA, one
 * server certificate (for client connections and for routes between servers) and one client
 * certificate per credential (mutual TLS). Keys are EC P-256, written with mode 0600.
 */
import { execFileSync } from "node:child_process"
import { chmodSync, existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"

export const OPENSSL_HINT =
  "openssl was not found on PATH; `moa auth init` needs it to make TLS certificates " +
  "(Debian/Ubuntu: `apt-get install -y openssl`; macOS ships LibreSSL, `brew install openssl` also works), " +
  "or pass --no-tls to write credentials without certificates."

export const findOpenssl = (): string | undefined => {
  try {
    execFileSync("openssl", ["version"], { stdio: "pipe" })
    return "openssl"
  } catch {
    return undefined
  }
}

export interface PkiOptions {
  readonly dir: string
  /** DNS names the servers are reached by (default: localhost). */
  readonly dnsNames?: ReadonlyArray<string>
  /** IP addresses the servers are reached by (default: 127.0.0.1, ::1). */
  readonly ipAddresses?: ReadonlyArray<string>
  /** One client certificate per name (CN = name). */
  readonly clients?: ReadonlyArray<string>
  readonly days?: number
}

export interface PkiFiles {
  readonly caFile: string
  readonly caKeyFile: string
  readonly serverCertFile: string
  readonly serverKeyFile: string
  readonly clients: Record<string, { readonly certFile: string; readonly keyFile: string }>
}

const run = (args: ReadonlyArray<string>, cwd: string) => {
  try {
    execFileSync("openssl", args as Array<string>, { cwd, stdio: ["ignore", "pipe", "pipe"] })
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string }
    throw new Error(`openssl ${args[0]} failed: ${err.stderr?.toString().trim() || err.message}`)
  }
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

const DNS_RE = /^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$/
const IP_RE = /^[0-9a-fA-F:.]+$/

/** Make the CA, server and client certificates in `dir` (created; must not hold a CA yet). */
export const generatePki = (o: PkiOptions): PkiFiles => {
  if (!findOpenssl()) throw new Error(OPENSSL_HINT)
  const days = String(o.days ?? 825)
  const dns = o.dnsNames?.length ? o.dnsNames : ["localhost"]
  const ips = o.ipAddresses?.length ? o.ipAddresses : ["127.0.0.1", "::1"]
  for (const d of dns) if (!DNS_RE.test(d)) throw new Error(`TLS: ${JSON.stringify(d)} is not a DNS name (use --san-ip for addresses)`)
  for (const ip of ips) if (!IP_RE.test(ip)) throw new Error(`TLS: ${JSON.stringify(ip)} is not an IP address`)
  mkdirSync(o.dir, { recursive: true })
  const dir = o.dir
  const caFile = join(dir, "ca.pem")
  if (existsSync(caFile)) throw new Error(`TLS: ${caFile} already exists; refusing to replace a CA (remove the folder or choose another --out)`)
  const caKeyFile = join(dir, "ca-key.pem")
  run(["req", "-x509", ...EC, "-keyout", caKeyFile, "-out", caFile, "-days", days, "-subj", "/O=moa/CN=moa cluster CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], dir)

  const sign = (name: string, subject: string, ext: string) => {
    const key = join(dir, `${name}-key.pem`)
    const csr = join(dir, `${name}.csr`)
    const cert = join(dir, `${name}.pem`)
    const extFile = join(dir, `${name}.ext`)
    writeFileSync(extFile, ext)
    run(["req", ...EC, "-keyout", key, "-out", csr, "-subj", subject], dir)
    run(["x509", "-req", "-in", csr, "-CA", caFile, "-CAkey", caKeyFile, "-CAcreateserial", "-out", cert, "-days", days, "-sha256", "-extfile", extFile], dir)
    rmSync(csr)
    rmSync(extFile)
    chmodSync(key, 0o600)
    return { certFile: cert, keyFile: key }
  }

  const san = [...dns.map((d) => `DNS:${d}`), ...ips.map((ip) => `IP:${ip}`)].join(",")
  // Servers present this certificate to clients and to each other on routes (hence clientAuth too).
  const server = sign("server", "/O=moa/CN=moa nats server",
    `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=${san}\n`)
  const clients: Record<string, { certFile: string; keyFile: string }> = {}
  for (const c of o.clients ?? []) {
    if (!/^[A-Za-z0-9_-]+$/.test(c)) throw new Error(`TLS: client name ${JSON.stringify(c)} may only contain letters, digits, "_" and "-"`)
    clients[c] = sign(`client-${c}`, `/O=moa/CN=${c}`, "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
  }
  chmodSync(caKeyFile, 0o600)
  rmSync(join(dir, "ca.srl"), { force: true })
  return { caFile, caKeyFile, serverCertFile: server.certFile, serverKeyFile: server.keyFile, clients }
}
