/** `moa auth init` through the real CLI binary, and nats-server's own check of what it wrote. */
import { findNatsServerBinary } from "@moa/bus/testing"
import { execFileSync, spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, describe, expect, it } from "vitest"

const ROOT = fileURLToPath(new URL("../../../", import.meta.url))
const MOA = join(ROOT, "packages/cli/bin/moa.js")
const dir = mkdtempSync(join(tmpdir(), "moa-cli-auth-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const moa = (args: Array<string>) => spawnSync(process.execPath, [MOA, ...args], { cwd: ROOT, encoding: "utf8", timeout: 110_000 })

describe("moa auth init (CLI)", () => {
  it("writes credentials for the agents of a cluster file, in a config nats-server accepts", () => {
    const out = join(dir, "auth")
    const r = moa(["auth", "init", "--out", out, "--cluster-file", "examples/quickstart/cluster.ts", "--coordinator", "coach", "--san-dns", "nats-1,nats-2,nats-3"])
    expect(r.stderr).toBe("")
    expect(r.status).toBe(0)
    expect(r.stdout).toMatch(/wrote \d+ credentials for cluster quickstart/)
    const manifest = JSON.parse(readFileSync(join(out, "roles.json"), "utf8"))
    const kinds = new Set(manifest.credentials.map((c: { kind: string }) => c.kind))
    expect(kinds).toEqual(new Set(["expert", "router", "coordinator", "console", "admin"]))
    for (const c of manifest.credentials) expect(existsSync(c.seedFile)).toBe(true)
    // the certificate names the extra hosts
    const san = execFileSync("openssl", ["x509", "-in", join(out, "tls/server.pem"), "-noout", "-ext", "subjectAltName"]).toString()
    expect(san).toContain("DNS:nats-3")
    expect(san).toContain("IP Address:127.0.0.1")
    const check = spawnSync(findNatsServerBinary()!, ["-t", "-c", join(out, "nats-server.conf")], { encoding: "utf8" })
    expect(check.stderr + check.stdout).toMatch(/configuration file .* is valid/)
    expect(check.status).toBe(0)
  }, 120_000)

  it("says what is missing", () => {
    const r = moa(["auth", "init", "--out", join(dir, "x"), "--cluster", "t"])
    expect(r.status).toBe(1)
    expect(r.stderr).toMatch(/missing --experts, --router, --coordinator/)
    expect(existsSync(join(dir, "x"))).toBe(false)
  }, 120_000)
})
