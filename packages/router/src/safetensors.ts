// Minimal safetensors (https://github.com/huggingface/safetensors) for F32 tensors:
// 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
// then the raw little-endian data. Enough for gate weights; readable by the Python library.

export interface NamedTensor {
  readonly shape: ReadonlyArray<number>
  readonly data: Float32Array
}

export const encodeSafetensors = (tensors: Record<string, NamedTensor>, metadata: Record<string, string> = {}): Uint8Array => {
  const names = Object.keys(tensors).sort()
  const header: Record<string, unknown> = {}
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata
  let offset = 0
  for (const name of names) {
    const t = tensors[name]
    const size = t.shape.reduce((a, b) => a * b, 1)
    if (size !== t.data.length) throw new Error(`tensor "${name}" has shape [${t.shape}] but ${t.data.length} values`)
    header[name] = { dtype: "F32", shape: [...t.shape], data_offsets: [offset, offset + 4 * size] }
    offset += 4 * size
  }
  let json = JSON.stringify(header)
  while ((8 + json.length) % 8 !== 0) json += " " // align the data to 8 bytes
  const headerBytes = new TextEncoder().encode(json)
  const out = new Uint8Array(8 + headerBytes.length + offset)
  const view = new DataView(out.buffer)
  view.setBigUint64(0, BigInt(headerBytes.length), true)
  out.set(headerBytes, 8)
  let at = 8 + headerBytes.length
  for (const name of names) {
    const t = tensors[name]
    for (let i = 0; i < t.data.length; i++) view.setFloat32(at + 4 * i, t.data[i], true)
    at += 4 * t.data.length
  }
  return out
}

export const decodeSafetensors = (bytes: Uint8Array): { tensors: Record<string, NamedTensor>; metadata: Record<string, string> } => {
  if (bytes.length < 8) throw new Error(`not a safetensors file: ${bytes.length} bytes is shorter than its 8-byte header length`)
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const n = Number(view.getBigUint64(0, true))
  if (8 + n > bytes.length) throw new Error(`not a safetensors file: header length ${n} exceeds the file size ${bytes.length}`)
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, any>
  const tensors: Record<string, NamedTensor> = {}
  let metadata: Record<string, string> = {}
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") {
      metadata = entry
      continue
    }
    if (entry.dtype !== "F32") throw new Error(`tensor "${name}" has dtype ${entry.dtype}; only F32 is supported here`)
    const [start, end] = entry.data_offsets as [number, number]
    const data = new Float32Array((end - start) / 4)
    for (let i = 0; i < data.length; i++) data[i] = view.getFloat32(8 + n + start + 4 * i, true)
    tensors[name] = { shape: entry.shape, data }
  }
  return { tensors, metadata }
}
