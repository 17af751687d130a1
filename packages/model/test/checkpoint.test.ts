import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as tf from "@tensorflow/tfjs"
import { beforeAll, describe, expect, it } from "vitest"
import { initBackend } from "../src/backend.js"
import { decodeSafetensors, encodeSafetensors, loadCheckpoint, saveCheckpoint, writeFolderAtomic } from "../src/checkpoint.js"
import { GPT, makeConfig } from "../src/gpt.js"
import { BPETokenizer } from "../src/tokenizer.js"

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "moa-ckpt-"))

beforeAll(async () => {
  await initBackend("wasm")
})

describe("safetensors", () => {
  it("writes the documented layout and reads it back", () => {
    const bytes = encodeSafetensors(
      new Map([["a", { dtype: "F32" as const, shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }], ["b", { dtype: "I32" as const, shape: [1], data: Int32Array.from([7]) }]]),
      { step: "3" },
    )
    const hlen = Number(new DataView(bytes.buffer).getBigUint64(0, true))
    expect((8 + hlen) % 8).toBe(0)
    const header = JSON.parse(Buffer.from(bytes.slice(8, 8 + hlen)).toString())
    expect(header.a).toEqual({ dtype: "F32", shape: [2, 3], data_offsets: [0, 24] })
    expect(header.b).toEqual({ dtype: "I32", shape: [1], data_offsets: [24, 28] })
    expect(header.__metadata__).toEqual({ step: "3" })
    const back = decodeSafetensors(bytes)
    expect(Array.from(back.tensors.get("a")!.data)).toEqual([1, 2, 3, 4, 5, 6])
    expect(Array.from(back.tensors.get("b")!.data)).toEqual([7])
  })

  it("refuses truncated or corrupt files with the file and tensor named", () => {
    const bytes = encodeSafetensors(new Map([["w", { dtype: "F32" as const, shape: [4], data: new Float32Array(4) }]]))
    expect(() => decodeSafetensors(bytes.slice(0, 5), "m.safetensors")).toThrow(/m.safetensors: truncated/)
    expect(() => decodeSafetensors(bytes.slice(0, bytes.length - 4), "m.safetensors")).toThrow(/m.safetensors: tensor "w": truncated/)
    const bad = bytes.slice()
    bad[9] = 0x21 // break the JSON
    expect(() => decodeSafetensors(bad, "m.safetensors")).toThrow(/corrupt header/)
    const huge = bytes.slice()
    new DataView(huge.buffer).setBigUint64(0, 1n << 40n, true)
    expect(() => decodeSafetensors(huge, "m.safetensors")).toThrow(/header length/)
  })
})

describe("checkpoints", () => {
  it("save → load gives identical logits, tokenizer and config (HF folder layout)", () => {
    const dir = path.join(tmp(), "ckpt")
    const tok = BPETokenizer.train(["hello world, hello Brasília"], 270)
    const model = new GPT(makeConfig({ vocabSize: tok.vocabSize, contextLength: 8, dModel: 16, nLayers: 1, nHeads: 2, tiedEmbeddings: false, position: "rope" }))
    saveCheckpoint(dir, model, tok)
    expect(fs.readdirSync(dir).sort()).toEqual(["config.json", "model.safetensors", "tokenizer.json"])
    expect(JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8")).model_type).toBe("moa-gpt")
    const st = decodeSafetensors(fs.readFileSync(path.join(dir, "model.safetensors")))
    expect(st.tensors.get("h.0.mlp.fc_in.weight")!.shape).toEqual([64, 16]) // nn.Linear [out, in]
    expect(st.tensors.get("lm_head.weight")!.shape).toEqual([tok.vocabSize, 16])
    const loaded = loadCheckpoint(dir)
    const ids = tf.tensor2d([tok.encode("hello wo").slice(0, 8)], undefined, "int32")
    const a = tf.tidy(() => model.forward(ids).arraySync())
    const b = tf.tidy(() => loaded.model.forward(ids).arraySync())
    expect(b).toEqual(a)
    expect(loaded.tokenizer.encode("Brasília")).toEqual(tok.encode("Brasília"))
    expect(loaded.config).toEqual(model.config)
    ids.dispose()
    model.dispose()
    loaded.model.dispose()
  })

  it("a missing tensor, a shape mismatch or a truncated file is a clear error", () => {
    const dir = path.join(tmp(), "ckpt")
    const tok = BPETokenizer.train(["abc abc"], 262)
    const model = new GPT(makeConfig({ vocabSize: tok.vocabSize, contextLength: 8, dModel: 16, nLayers: 1, nHeads: 2 }))
    saveCheckpoint(dir, model, tok)
    const file = path.join(dir, "model.safetensors")
    const good = fs.readFileSync(file)
    const { tensors } = decodeSafetensors(good)
    tensors.delete("h.0.attn.k_proj.weight")
    fs.writeFileSync(file, encodeSafetensors(tensors))
    expect(() => loadCheckpoint(dir)).toThrow(/model.safetensors: tensor "h.0.attn.k_proj.weight": missing/)
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8"))
    fs.writeFileSync(file, good)
    fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify({ ...cfg, dModel: 32 }))
    expect(() => loadCheckpoint(dir)).toThrow(/tensor "wte.weight": shape \[\d+,16\] does not match the config's \[\d+,32\]/)
    fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(cfg))
    fs.writeFileSync(file, good.subarray(0, good.length - 100))
    expect(() => loadCheckpoint(dir)).toThrow(/model.safetensors: tensor ".*": truncated/)
    model.dispose()
  })

  it("an interrupted save leaves the previous checkpoint intact", () => {
    const dir = path.join(tmp(), "ckpt")
    writeFolderAtomic(dir, { "a.txt": "old" })
    const boom = { get length(): number { throw new Error("disk full") } } as unknown as Uint8Array
    expect(() => writeFolderAtomic(dir, { "a.txt": "new", "b.bin": boom })).toThrow()
    expect(fs.readFileSync(path.join(dir, "a.txt"), "utf8")).toBe("old")
    expect(fs.readdirSync(path.dirname(dir))).toEqual(["ckpt"]) // no temp folder left behind
  })
})
