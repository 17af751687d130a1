/**
 * Rebuild the example's checkpoint: `tsx examples/tiny-expert/build.ts` (a few minutes on wasm).
 * A tiny GPT taught to reverse short words (`rev abc` → `cba`); see docs/expert.md.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { buildTinyCheckpoint } from "@moa/expert"

const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), "model")
fs.rmSync(dir, { recursive: true, force: true })
const r = await buildTinyCheckpoint(dir, { backend: "wasm", steps: 800, config: { dModel: 64, nLayers: 2, nHeads: 4 } })
console.log(`saved ${dir} in ${r.seconds.toFixed(1)} s, final loss ${r.loss.toFixed(3)}`)
