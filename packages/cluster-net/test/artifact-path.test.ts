import { Effect, Exit } from "effect"
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ArtifactPathError, resolveArtifactPath, resolveArtifactPathEffect } from "../src/index.ts"

let base: string
let root: string
let outside: string

beforeAll(() => {
  base = mkdtempSync(join(tmpdir(), "moa-artifacts-"))
  root = join(base, "artifacts")
  outside = join(base, "secret")
  mkdirSync(join(root, "adapters", "geo"), { recursive: true })
  mkdirSync(outside)
  writeFileSync(join(outside, "key.pem"), "not for you")
  writeFileSync(join(root, "adapters", "geo", "v1.safetensors"), "weights")
  symlinkSync(outside, join(root, "escape")) // a symlink inside root pointing out
  symlinkSync(join(root, "adapters"), join(root, "alias")) // a symlink that stays inside
  symlinkSync(join(base, "nowhere"), join(root, "dangling"))
})
afterAll(() => rmSync(base, { recursive: true, force: true }))

const refused = (name: unknown, reason: RegExp) => {
  let err: unknown
  try {
    resolveArtifactPath(root, name)
  } catch (e) {
    err = e
  }
  expect(err, `expected ${JSON.stringify(name)} to be refused`).toBeInstanceOf(ArtifactPathError)
  expect((err as ArtifactPathError).message).toMatch(reason)
}

describe("resolveArtifactPath", () => {
  it("resolves plain nested names inside the folder, existing or not", () => {
    expect(resolveArtifactPath(root, "adapters/geo/v1.safetensors")).toBe(join(root, "adapters/geo/v1.safetensors"))
    expect(resolveArtifactPath(root, "adapters/geo/v2.safetensors")).toBe(join(root, "adapters/geo/v2.safetensors"))
    expect(resolveArtifactPath(root, "new/dir/ckpt-0001.bin")).toBe(join(root, "new/dir/ckpt-0001.bin"))
    expect(resolveArtifactPath(root, "alias/geo/v1.safetensors")).toBe(join(root, "alias/geo/v1.safetensors"))
  })

  it("refuses .. in any position", () => {
    refused("../secret/key.pem", /"\.\." segment/)
    refused("adapters/../../secret/key.pem", /"\.\." segment/)
    refused("adapters/..", /"\.\." segment/)
    refused("..", /"\.\." segment/)
    refused("./adapters", /"\." segment/)
  })

  it("refuses absolute paths, drive letters and backslashes", () => {
    refused("/etc/passwd", /absolute path/)
    refused(join(outside, "key.pem"), /absolute path/)
    refused("C:/Windows/win.ini", /absolute path/)
    refused("..\\secret\\key.pem", /backslash/)
  })

  it("refuses NUL bytes, empty names and non-strings", () => {
    refused("adapters/geo\0/../../secret", /NUL byte/)
    refused("", /empty/)
    refused("adapters//geo", /empty path segment/)
    refused("adapters/geo/", /empty path segment/)
    refused(42, /not a string/)
    refused(undefined, /not a string/)
    refused("a".repeat(2000), /longer than/)
    refused("adapters/geo v1", /characters other than/)
    refused("adapters/%2e%2e/secret", /characters other than/)
  })

  it("refuses names that go through a symlink pointing outside (or nowhere)", () => {
    refused("escape/key.pem", /symlink that points outside/)
    refused("escape", /symlink that points outside/)
    refused("escape/new-file", /symlink that points outside/)
    refused("dangling/x", /dangling symlink|symlink that points outside/)
  })

  it("has an Effect form failing with the tagged error", () => {
    const ok = Effect.runSync(resolveArtifactPathEffect(root, "adapters/geo/v1.safetensors"))
    expect(ok).toBe(join(root, "adapters/geo/v1.safetensors"))
    const exit = Effect.runSyncExit(resolveArtifactPathEffect(root, "../x"))
    expect(Exit.isFailure(exit)).toBe(true)
    if (Exit.isFailure(exit)) expect(JSON.stringify(exit.cause)).toContain("ArtifactPathError")
  })

  it("says clearly when the artifacts folder itself is missing", () => {
    expect(() => resolveArtifactPath(join(base, "missing"), "a/b")).toThrow(/does not exist; create it first/)
  })
})
