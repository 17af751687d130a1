/**
 * docker/ without a Docker engine: the compose file parses, names files, images and commands
 * that exist, every agent it starts is an agent of its cluster file, the mounted credential
 * files are exactly what `moa auth init` writes (and where the env files say they are), and
 * nats-server 2.9 accepts the three committed cluster configs with a generated auth folder.
 */
import { findNatsServerBinary } from "@moa/bus/testing"
import { loadClusterFile } from "@moa/runtime"
import { spawnSync } from "node:child_process"
import { accessSync, constants, cpSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { parse } from "yaml"
import { authInit, renderDockerNatsConfigs, type AuthInitResult } from "../src/index.ts"

const ROOT = fileURLToPath(new URL("../../../", import.meta.url))
const DOCKER = join(ROOT, "docker")
const compose = parse(readFileSync(join(DOCKER, "compose.yaml"), "utf8"), { merge: true }) as {
  services: Record<string, any>
  volumes: Record<string, unknown>
}
const services = Object.entries(compose.services)
const natsServices = services.filter(([, s]) => String(s.image).startsWith("nats:"))
const agentServices = services.filter(([, s]) => s.build)

let tmp: string
let auth: AuthInitResult
let serverAuth: AuthInitResult

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), "moa-docker-"))
  // exactly what the compose file's header tells the user to run (paths as the containers see them)
  auth = authInit({
    out: join(tmp, "auth"),
    cluster: "quickstart",
    experts: ["echo", "upper", "calc"],
    router: "router",
    coordinator: "coach",
    dnsNames: ["nats-1", "nats-2", "nats-3"],
    serverPath: "/etc/nats/auth",
    clientPath: "/run/moa",
  })
  // the same, with paths nats-server can open on this machine (for `nats-server -t`)
  serverAuth = authInit({
    out: join(tmp, "srv", "auth"),
    cluster: "quickstart",
    experts: ["echo", "upper", "calc"],
    router: "router",
    coordinator: "coach",
    dnsNames: ["nats-1", "nats-2", "nats-3"],
  })
})
afterAll(() => tmp && rmSync(tmp, { recursive: true, force: true }))

/** `./x:/y:ro` → { source: docker/x, target: /y } (named volumes have no "./"). */
const binds = (s: any) =>
  (s.volumes ?? [])
    .map((v: string) => v.split(":"))
    .filter(([src]: Array<string>) => src.startsWith("./"))
    .map(([src, target]: Array<string>) => ({ src, source: resolve(DOCKER, src), target }))

describe("docker/compose.yaml", () => {
  it("has a 3-node NATS cluster on nats-server 2.9 with the generated configs", () => {
    expect(natsServices.map(([n]) => n).sort()).toEqual(["nats-1", "nats-2", "nats-3"])
    for (const [name, s] of natsServices) {
      expect(s.image).toMatch(/^nats:2\.9\.\d+-alpine$/)
      expect(s.command).toEqual(["-c", "/etc/nats/nats.conf"])
      const conf = binds(s).find((b: any) => b.target === "/etc/nats/nats.conf")
      expect(conf?.src).toBe(`./nats/${name}.conf`)
      for (const [vol] of (s.volumes as Array<string>).map((v) => v.split(":")).filter(([v]) => !v.startsWith("./"))) {
        expect(Object.keys(compose.volumes)).toContain(vol)
      }
    }
    // the committed configs are the renderer's output (regenerate: npx tsx packages/cluster-net/src/docker.ts)
    for (const { file, text } of renderDockerNatsConfigs()) expect(readFileSync(join(DOCKER, "nats", file), "utf8")).toBe(text)
  })

  it("mounts only files that exist in the repo or that `moa auth init` writes", () => {
    for (const [name, s] of services) {
      for (const b of binds(s)) {
        if (b.src.startsWith("./auth/")) {
          const generated = join(auth.out, b.src.slice("./auth/".length))
          expect(existsSync(generated), `${name}: ${b.src} is not written by moa auth init`).toBe(true)
        } else {
          expect(existsSync(b.source), `${name}: ${b.src} missing`).toBe(true)
        }
      }
    }
  })

  it("starts each agent with its own credential, mounted where its env file points", () => {
    expect(agentServices.length).toBeGreaterThanOrEqual(4)
    for (const [name, s] of agentServices) {
      expect(s.env_file).toEqual([`./auth/env/${name}.env`])
      const env = Object.fromEntries(
        readFileSync(join(auth.out, "env", `${name}.env`), "utf8")
          .split("\n")
          .filter((l) => l && !l.startsWith("#"))
          .map((l) => l.split("=") as [string, string]),
      )
      expect(env.MOA_NATS_USER).toBe(name)
      const targets = binds(s).map((b: any) => b.target)
      for (const k of ["MOA_NATS_NKEY_SEED_FILE", "MOA_NATS_CA", "MOA_NATS_CERT", "MOA_NATS_KEY"]) expect(targets, `${name}: ${k}`).toContain(env[k])
      // and no other credential's secret
      for (const b of binds(s)) expect(b.src).not.toMatch(new RegExp(`creds/(?!${name}\\.nk)`))
      expect(s.environment.MOA_NATS_URL).toBe("tls://nats-1:4222,tls://nats-2:4222,tls://nats-3:4222")
    }
  })

  it("runs agents that exist in its cluster file, with an image built from files that exist", async () => {
    for (const [name, s] of agentServices) {
      const dockerfile = join(resolve(DOCKER, s.build.context), s.build.dockerfile)
      expect(existsSync(dockerfile), `${name}: ${s.build.dockerfile}`).toBe(true)
      const clusterFile = join(ROOT, s.environment.MOA_CLUSTER_FILE)
      const cluster = await loadClusterFile(clusterFile)
      for (const a of String(s.environment.MOA_AGENTS).split(",")) expect(cluster.agents.map((x) => x.name), `${name}: agent ${a}`).toContain(a)
      expect(auth.credentials.map((c) => c.user)).toContain(name)
    }
  })
})

describe("docker/Dockerfile and Dockerfile.gpu", () => {
  for (const file of ["Dockerfile", "Dockerfile.gpu"]) {
    it(`${file}: pinned bases, an entrypoint that exists, a .dockerignore that keeps secrets out`, () => {
      const text = readFileSync(join(DOCKER, file), "utf8")
      const froms = [...text.matchAll(/^FROM (\S+)/gm)].map((m) => m[1])
      expect(froms.length).toBeGreaterThan(0)
      for (const f of froms) expect(f, "base images carry a version tag").toMatch(/:[0-9]/)
      const entry = /^ENTRYPOINT \["([^"]+)"\]/m.exec(text)?.[1]
      expect(entry).toBe("/app/docker/agent-entrypoint.sh")
      const script = join(ROOT, entry!.slice("/app/".length))
      accessSync(script, constants.X_OK)
      expect(spawnSync("sh", ["-n", script]).status).toBe(0)
      expect(readFileSync(script, "utf8")).toContain("node packages/cli/bin/moa.js up")
      expect(existsSync(join(ROOT, "packages/cli/bin/moa.js"))).toBe(true)
      expect(existsSync(join(ROOT, "package-lock.json"))).toBe(true) // npm ci needs it
      const ignore = readFileSync(join(DOCKER, `${file}.dockerignore`), "utf8").split("\n")
      for (const must of ["node_modules", ".git", "docker/auth", ".moa"]) expect(ignore).toContain(must)
    })
  }
  it("the GPU variant installs tfjs-node-gpu at the tfjs version of the repo on a CUDA base", () => {
    const text = readFileSync(join(DOCKER, "Dockerfile.gpu"), "utf8")
    const tfjs = JSON.parse(readFileSync(join(ROOT, "node_modules/@tensorflow/tfjs/package.json"), "utf8")).version
    expect(text).toContain(`@tensorflow/tfjs-node-gpu@${tfjs}`)
    expect(text).toMatch(/^FROM nvidia\/cuda:11\.\d+\.\d+-cudnn8-runtime/m)
  })
})

describe("docker/nats/*.conf with nats-server 2.9", () => {
  it("passes nats-server -t with a generated auth folder (accounts, permissions, client + route TLS)", () => {
    const bin = findNatsServerBinary()!
    const dir = join(tmp, "srv")
    for (const { file, text } of renderDockerNatsConfigs(serverAuth.out)) {
      writeFileSync(join(dir, file), text)
      const r = spawnSync(bin, ["-t", "-c", join(dir, file)], { encoding: "utf8" })
      expect(r.stderr + r.stdout, file).toMatch(/is valid/)
      expect(r.status).toBe(0)
    }
    // and a broken include is caught by the same check (the check can fail)
    cpSync(join(dir, "nats-1.conf"), join(dir, "broken.conf"))
    writeFileSync(join(dir, "broken.conf"), readFileSync(join(dir, "broken.conf"), "utf8").replace("auth/auth.conf", "auth/missing.conf"))
    expect(spawnSync(bin, ["-t", "-c", join(dir, "broken.conf")]).status).not.toBe(0)
    expect(statSync(serverAuth.authConf).size).toBeGreaterThan(0)
  })
})
