// Checkpoints in the Hugging Face folder layout:
//   config.json        GPTConfig (+ "model_type": "moa-gpt")
//   model.safetensors  weights, linear layers as PyTorch's nn.Linear [out, in]
//   tokenizer.json     our tokenizer
// safetensors is written and read here: 8-byte little-endian header length, a JSON header
// { name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__": { str: str } },
// then the raw little-endian data. Saves go to a temporary sibling folder and are renamed
// into place, so an interrupted save never leaves a half-written checkpoint.

import * as fs from "node:fs"
import * as path from "node:path"
import * as tf from "@tensorflow/tfjs"
import { GPT, makeConfig, type GPTConfig } from "./gpt.js"
import { tokenizerFromJSON, type Tokenizer } from "./tokenizer.js"

export type STDtype = "F32" | "I32"
export interface STTensor {
  dtype: STDtype
  shape: number[]
  data: Float32Array | Int32Array
}

const DTYPE_BYTES: Record<string, number> = { F32: 4, I32: 4, F16: 2, BF16: 2, F64: 8, I64: 8, I16: 2, I8: 1, U8: 1, BOOL: 1 }

export class CheckpointError extends Error {
  constructor(
    readonly file: string,
    readonly tensor: string | undefined,
    message: string,
  ) {
    super(`${file}${tensor ? `: tensor "${tensor}"` : ""}: ${message}`)
    this.name = "CheckpointError"
  }
}

/** Serialise tensors (+ string metadata) to safetensors bytes. */
export function encodeSafetensors(tensors: Map<string, STTensor>, metadata: Record<string, string> = {}): Uint8Array {
  const header: Record<string, unknown> = {}
  if (Object.keys(metadata).length) header.__metadata__ = metadata
  let offset = 0
  for (const [name, t] of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1)
    if (n !== t.data.length) throw new Error(`tensor "${name}": shape [${t.shape}] needs ${n} values, got ${t.data.length}`)
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] }
    offset += t.data.byteLength
  }
  let json = JSON.stringify(header)
  json += " ".repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8) // data starts 8-byte aligned
  const head = Buffer.from(json, "utf8")
  const out = new Uint8Array(8 + head.length + offset)
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true)
  out.set(head, 8)
  let p = 8 + head.length
  for (const t of tensors.values()) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), p)
    p += t.data.byteLength
  }
  return out
}

/** Parse and validate safetensors bytes; `file` names the source in errors. */
export function decodeSafetensors(bytes: Uint8Array, file = "model.safetensors"): { tensors: Map<string, STTensor>; metadata: Record<string, string> } {
  const fail = (why: string, tensor?: string): never => {
    throw new CheckpointError(file, tensor, why)
  }
  if (bytes.length < 8) fail(`truncated: ${bytes.length} bytes, not even the 8-byte header length`)
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const hlen = Number(dv.getBigUint64(0, true))
  if (hlen > bytes.length - 8) fail(`truncated or corrupt: header length ${hlen} exceeds the file size ${bytes.length}`)
  let header: any
  try {
    header = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset + 8, hlen).toString("utf8"))
  } catch (e) {
    return fail(`corrupt header (not JSON: ${(e as Error).message})`)
  }
  if (!header || typeof header !== "object" || Array.isArray(header)) fail("corrupt header (not a JSON object)")
  const dataStart = 8 + hlen
  const dataLen = bytes.length - dataStart
  const metadata = (header.__metadata__ ?? {}) as Record<string, string>
  const tensors = new Map<string, STTensor>()
  const spans: [number, number, string][] = []
  for (const [name, e] of Object.entries(header)) {
    if (name === "__metadata__") continue
    if (!e || typeof e !== "object") fail("header entry is not an object", name)
    const { dtype, shape, data_offsets: off } = e as { dtype: string; shape: number[]; data_offsets: number[] }
    if (!(dtype in DTYPE_BYTES)) fail(`unknown dtype ${JSON.stringify(dtype)}`, name)
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) fail(`bad shape ${JSON.stringify(shape)}`, name)
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isInteger(d) && d >= 0) || off[1] < off[0])
      fail(`bad data_offsets ${JSON.stringify(off)}`, name)
    const n = shape.reduce((a, b) => a * b, 1)
    if (off[1] - off[0] !== n * DTYPE_BYTES[dtype])
      fail(`data_offsets span ${off[1] - off[0]} bytes but shape [${shape}] of ${dtype} needs ${n * DTYPE_BYTES[dtype]}`, name)
    if (off[1] > dataLen) fail(`truncated: data ends at byte ${off[1]} but the file has ${dataLen} data bytes`, name)
    if (dtype !== "F32" && dtype !== "I32") fail(`dtype ${dtype} is not supported (F32 or I32)`, name)
    spans.push([off[0], off[1], name])
    const raw = Uint8Array.prototype.slice.call(bytes, dataStart + off[0], dataStart + off[1]) // a copy (Buffer.slice is a view): aligned, owned
    const data = dtype === "F32" ? new Float32Array(raw.buffer) : new Int32Array(raw.buffer)
    tensors.set(name, { dtype: dtype as STDtype, shape, data })
  }
  spans.sort((a, b) => a[0] - b[0])
  for (let i = 1; i < spans.length; i++)
    if (spans[i][0] < spans[i - 1][1]) fail(`data overlaps tensor "${spans[i - 1][2]}"`, spans[i][2])
  return { tensors, metadata }
}

export function readSafetensors(file: string) {
  let bytes: Uint8Array
  try {
    bytes = fs.readFileSync(file)
  } catch (e) {
    throw new CheckpointError(file, undefined, `cannot read (${(e as Error).message})`)
  }
  return decodeSafetensors(bytes, file)
}

/** Model weights in file layout: linear weights transposed to [out, in]. */
export function modelTensors(model: GPT): Map<string, STTensor> {
  const linear = new Set(model.linearNames().map((n) => `${n}.weight`))
  const out = new Map<string, STTensor>()
  for (const [name, v] of model.params) {
    const t = linear.has(name) ? tf.tidy(() => tf.transpose(v)) : v
    out.set(name, { dtype: "F32", shape: t.shape, data: t.dataSync() as Float32Array })
    if (t !== v) t.dispose()
  }
  return out
}

/** Copy weights (file layout) into a model; every parameter must be present with the right shape. */
export function loadModelTensors(model: GPT, tensors: Map<string, STTensor>, file = "model.safetensors") {
  const linear = new Set(model.linearNames().map((n) => `${n}.weight`))
  for (const name of tensors.keys())
    if (!model.params.has(name)) throw new CheckpointError(file, name, "unexpected tensor: the model config has no such parameter")
  for (const [name, v] of model.params) {
    const t = tensors.get(name)
    if (!t) throw new CheckpointError(file, name, `missing (expected shape [${linear.has(name) ? [...v.shape].reverse() : v.shape}])`)
    const expected = linear.has(name) ? [v.shape[1], v.shape[0]] : v.shape
    if (t.dtype !== "F32") throw new CheckpointError(file, name, `dtype ${t.dtype}, expected F32`)
    if (JSON.stringify(t.shape) !== JSON.stringify(expected))
      throw new CheckpointError(file, name, `shape [${t.shape}] does not match the config's [${expected}]`)
    tf.tidy(() => {
      const x = tf.tensor(t.data, t.shape, "float32")
      v.assign(linear.has(name) ? tf.transpose(x) : x)
    })
  }
}

/**
 * Write `files` (name → bytes or text) as the folder `dir`, atomically: everything goes
 * to a temporary sibling that is renamed into place once complete.
 */
export function writeFolderAtomic(dir: string, files: Record<string, Uint8Array | string>) {
  const abs = path.resolve(dir)
  fs.mkdirSync(path.dirname(abs), { recursive: true })
  const tmp = `${abs}.tmp-${process.pid}-${Date.now()}`
  fs.mkdirSync(tmp, { recursive: true })
  try {
    for (const [name, data] of Object.entries(files)) {
      const fd = fs.openSync(path.join(tmp, name), "w")
      fs.writeSync(fd, typeof data === "string" ? Buffer.from(data, "utf8") : data)
      fs.fsyncSync(fd)
      fs.closeSync(fd)
    }
    let old: string | undefined
    if (fs.existsSync(abs)) {
      old = `${abs}.old-${process.pid}-${Date.now()}`
      fs.renameSync(abs, old)
    }
    fs.renameSync(tmp, abs)
    if (old) fs.rmSync(old, { recursive: true, force: true })
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true })
    throw e
  }
}

export function configJSON(config: GPTConfig): string {
  return JSON.stringify({ model_type: "moa-gpt", ...config }, null, 2) + "\n"
}

export interface SaveOptions {
  /** string metadata stored in the safetensors header */
  metadata?: Record<string, string>
  /** more files to put in the folder (e.g. optimizer state) */
  extraFiles?: Record<string, Uint8Array | string>
}

/** Save model + tokenizer as an HF-style folder (atomically). */
export function saveCheckpoint(dir: string, model: GPT, tokenizer: Tokenizer, opts: SaveOptions = {}) {
  if (tokenizer.vocabSize > model.config.vocabSize)
    throw new Error(`tokenizer has ${tokenizer.vocabSize} tokens but the model only ${model.config.vocabSize}`)
  writeFolderAtomic(dir, {
    "config.json": configJSON(model.config),
    "model.safetensors": encodeSafetensors(modelTensors(model), { format: "pt", ...opts.metadata }),
    "tokenizer.json": JSON.stringify(tokenizer.toJSON()) + "\n",
    ...opts.extraFiles,
  })
}

export function readConfig(dir: string): GPTConfig {
  const file = path.join(dir, "config.json")
  let json: Record<string, unknown>
  try {
    json = JSON.parse(fs.readFileSync(file, "utf8"))
  } catch (e) {
    throw new CheckpointError(file, undefined, `cannot read config (${(e as Error).message})`)
  }
  const { model_type, ...rest } = json
  if (model_type !== undefined && model_type !== "moa-gpt")
    throw new CheckpointError(file, undefined, `model_type ${JSON.stringify(model_type)} is not "moa-gpt"`)
  try {
    return makeConfig(rest as unknown as GPTConfig)
  } catch (e) {
    throw new CheckpointError(file, undefined, (e as Error).message)
  }
}

export function readTokenizer(dir: string): Tokenizer {
  const file = path.join(dir, "tokenizer.json")
  let json: unknown
  try {
    json = JSON.parse(fs.readFileSync(file, "utf8"))
  } catch (e) {
    throw new CheckpointError(file, undefined, `cannot read tokenizer (${(e as Error).message})`)
  }
  return tokenizerFromJSON(json, file)
}

/** Load a folder written by saveCheckpoint (or by PyTorch with the same names). */
export function loadCheckpoint(dir: string): { model: GPT; tokenizer: Tokenizer; config: GPTConfig; metadata: Record<string, string> } {
  if (!fs.existsSync(dir)) throw new CheckpointError(dir, undefined, "checkpoint folder does not exist")
  const config = readConfig(dir)
  const tokenizer = readTokenizer(dir)
  const file = path.join(dir, "model.safetensors")
  const { tensors, metadata } = readSafetensors(file)
  const model = new GPT(config)
  try {
    loadModelTensors(model, tensors, file)
  } catch (e) {
    model.dispose()
    throw e
  }
  return { model, tokenizer, config, metadata }
}
