/**
 * Names that arrive in messages (checkpoint names, adapter names, object names) become paths
 * under the local artifacts folder. `resolveArtifactPath` is the one gate they pass: a name may
 * never reach outside that folder — not with `..`, not as an absolute path, not through a
 * symlink that points out, not with a NUL byte or a backslash trick.
 */
import { Data, Effect } from "effect"
import { lstatSync, realpathSync } from "node:fs"
import { isAbsolute, join, relative, resolve } from "node:path"

export class ArtifactPathError extends Data.TaggedError("ArtifactPathError")<{
  readonly name: string
  readonly root: string
  readonly reason: string
}> {
  override get message(): string {
    return `artifact name ${JSON.stringify(this.name)} refused: ${this.reason} (names must be relative paths of ` +
      `letters, digits, ".", "_", "-" and "/" that stay inside the artifacts folder ${this.root})`
  }
}

/** At most this many bytes in a name (a path, not a file's base name). */
export const MAX_ARTIFACT_NAME_BYTES = 1024

const SEGMENT = /^[A-Za-z0-9._-]+$/

const within = (root: string, p: string): boolean => {
  const rel = relative(root, p)
  return rel === "" || (!rel.startsWith("..") && !isAbsolute(rel))
}

/** Deepest existing ancestor of `p` (p itself when it exists), as an lstat-able path. */
const deepestExisting = (p: string): string => {
  let cur = p
  for (;;) {
    try {
      lstatSync(cur)
      return cur
    } catch {
      const parent = resolve(cur, "..")
      if (parent === cur) return cur
      cur = parent
    }
  }
}

/**
 * Resolve `name` (from a message) to an absolute path inside `root`, or throw
 * `ArtifactPathError` saying why not. The file need not exist yet (for writes); every part of
 * it that exists is resolved through symlinks and must still be inside `root`'s real path.
 */
export const resolveArtifactPath = (root: string, name: unknown): string => {
  const fail = (reason: string): never => {
    throw new ArtifactPathError({ name: String(name), root, reason })
  }
  if (typeof root !== "string" || root.length === 0) throw new Error("resolveArtifactPath: root must be a non-empty path")
  if (typeof name !== "string") return fail(`it is a ${typeof name}, not a string`)
  if (name.length === 0) return fail("it is empty")
  if (Buffer.byteLength(name) > MAX_ARTIFACT_NAME_BYTES) return fail(`it is longer than ${MAX_ARTIFACT_NAME_BYTES} bytes`)
  if (name.includes("\0")) return fail("it contains a NUL byte")
  if (name.includes("\\")) return fail("it contains a backslash")
  if (isAbsolute(name) || /^[A-Za-z]:/.test(name)) return fail("it is an absolute path")
  const segments = name.split("/")
  for (const s of segments) {
    if (s === "") return fail("it has an empty path segment (\"//\" or a trailing \"/\")")
    if (s === "." || s === "..") return fail(`it has a "${s}" segment`)
    if (!SEGMENT.test(s)) return fail(`segment ${JSON.stringify(s)} has characters other than letters, digits, ".", "_", "-"`)
  }
  const absRoot = resolve(root)
  const target = join(absRoot, ...segments)
  if (!within(absRoot, target)) return fail("it resolves outside the artifacts folder")
  // Symlinks: whatever part of the target exists must really live under the real root.
  let realRoot: string
  try {
    realRoot = realpathSync(absRoot)
  } catch {
    throw new Error(`resolveArtifactPath: the artifacts folder ${absRoot} does not exist; create it first`)
  }
  const existing = deepestExisting(target)
  if (within(absRoot, existing)) {
    let realExisting: string
    try {
      realExisting = realpathSync(existing)
    } catch {
      return fail("it goes through a dangling symlink")
    }
    if (!within(realRoot, realExisting)) return fail("it goes through a symlink that points outside the artifacts folder")
  }
  return target
}

/** `resolveArtifactPath` as an Effect failing with `ArtifactPathError`. */
export const resolveArtifactPathEffect = (root: string, name: unknown): Effect.Effect<string, ArtifactPathError> =>
  Effect.try({
    try: () => resolveArtifactPath(root, name),
    catch: (e) =>
      e instanceof ArtifactPathError ? e : new ArtifactPathError({ name: String(name), root, reason: String(e) }),
  })

