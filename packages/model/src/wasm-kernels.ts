// Kernel fixes for the tfjs wasm backend (see shared/COMPUTE.md).
//
// The stock wasm backend runs every batched or transposed BatchMatMul (all attention
// products, every weight gradient) through a naive loop at ~2 GFLOP/s, its Transpose,
// leading-axis Sum and Slice are slow, and UnsortedSegmentSum (the gradient of gather)
// is missing. We replace those kernels with:
//  - BatchMatMul: transposes materialised, then one XNNPACK call per batch slice.
//    Slices are zero-copy: a temporary tensor id is registered over a window of the
//    wasm heap, so the C++ side sees an ordinary batch-1, non-transposed product.
//  - Transpose, Sum over leading axes, Slice: plain loops over the wasm heap.
//  - UnsortedSegmentSum: a plain loop.
// These reach into backend internals (dataIdMap, registerTensor), so they are pinned
// to tfjs 4.22.0 and tested against the cpu backend.

import * as tf from "@tensorflow/tfjs"

export const PINNED_TFJS_VERSION = "4.22.0"

type TensorInfo = { dataId: object; shape: number[]; dtype: tf.DataType }
type TypedArray = Float32Array | Int32Array | Uint8Array
interface WasmBackend {
  wasm: {
    cwrap: (name: string, ret: null, args: string[]) => (...a: unknown[]) => void
    _malloc: (n: number) => number
    _free: (p: number) => void
    HEAPU8: Uint8Array
    tfjs: { registerTensor(id: number, size: number, offset: number): void; disposeData(id: number): void }
  }
  dataIdMap: { get(id: object): { id: number; memoryOffset: number } }
  dataIdNextNumber: number
  makeOutput(shape: number[], dtype: tf.DataType): TensorInfo
  typedArrayFromHeap(t: TensorInfo): TypedArray
  disposeData(id: object, force?: boolean): boolean
}
type KernelArgs = { inputs: Record<string, TensorInfo>; backend: WasmBackend; attrs: Record<string, any> }
type KernelFunc = (args: KernelArgs) => TensorInfo

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1)

let installed = false
const originals = new Map<string, KernelFunc>()
let wasmBmm: ((...a: unknown[]) => void) | undefined

/** Install the fixes on the registered `wasm` backend. Returns false (and the reason) when skipped. */
export function installWasmKernelFixes(version: string = tf.version.tfjs): { installed: boolean; reason: string } {
  if (version !== PINNED_TFJS_VERSION) {
    return {
      installed: false,
      reason: `tfjs ${version} is not the pinned ${PINNED_TFJS_VERSION}: wasm kernel fixes skipped (they touch backend internals)`,
    }
  }
  if (installed) return { installed: true, reason: `kernel fixes for tfjs ${PINNED_TFJS_VERSION} installed` }
  const replace = (name: string, fn: (orig: KernelFunc) => KernelFunc) => {
    const orig = tf.getKernel(name, "wasm")
    const origFunc = orig?.kernelFunc as unknown as KernelFunc | undefined
    if (orig) {
      originals.set(name, origFunc!)
      tf.unregisterKernel(name, "wasm")
    }
    tf.registerKernel({
      kernelName: name,
      backendName: "wasm",
      kernelFunc: fn(origFunc ?? (() => { throw new Error(`no original wasm kernel ${name}`) })) as unknown as tf.KernelFunc,
    })
  }
  replace("BatchMatMul", (orig) => (args) => batchMatMul(args, orig))
  replace("Transpose", (orig) => (args) => transposeKernel(args, orig))
  replace("Sum", (orig) => (args) => sumKernel(args, orig))
  replace("Slice", () => (args) => sliceKernel(args))
  replace("UnsortedSegmentSum", () => (args) => unsortedSegmentSum(args))
  installed = true
  return { installed: true, reason: `kernel fixes for tfjs ${PINNED_TFJS_VERSION} installed` }
}

export function wasmKernelFixesInstalled(): boolean {
  return installed
}

// ---------------------------------------------------------------- helpers

function heapF32(backend: WasmBackend): Float32Array {
  return new Float32Array(backend.wasm.HEAPU8.buffer)
}

function offsetOf(backend: WasmBackend, t: TensorInfo): number {
  return backend.dataIdMap.get(t.dataId).memoryOffset
}

/** Register a temporary C++-side tensor id over `n` floats of the heap at byte offset `off`. */
function viewId(backend: WasmBackend, off: number, n: number): number {
  const id = backend.dataIdNextNumber++
  backend.wasm.tfjs.registerTensor(id, n, off)
  return id
}

/** out[b, c, r] = inp[b, r, c] for `batch` matrices of R×C, tiled for the cache. */
function transpose2d(src: TypedArray, so: number, dst: TypedArray, d: number, batch: number, R: number, C: number) {
  const TILE = 32
  for (let b = 0; b < batch; b++) {
    const sb = so + b * R * C
    const db = d + b * R * C
    for (let r0 = 0; r0 < R; r0 += TILE) {
      const r1 = Math.min(R, r0 + TILE)
      for (let c0 = 0; c0 < C; c0 += TILE) {
        const c1 = Math.min(C, c0 + TILE)
        for (let r = r0; r < r1; r++) {
          const srow = sb + r * C
          for (let c = c0; c < c1; c++) dst[db + c * R + r] = src[srow + c]
        }
      }
    }
  }
}

// ---------------------------------------------------------------- BatchMatMul

function batchMatMul(args: KernelArgs, orig: KernelFunc): TensorInfo {
  const { a, b } = args.inputs
  const { transposeA, transposeB } = args.attrs as { transposeA: boolean; transposeB: boolean }
  const backend = args.backend
  if (a.dtype !== "float32" || b.dtype !== "float32") return orig(args)
  const ra = a.shape.length
  const rb = b.shape.length
  const M = transposeA ? a.shape[ra - 1] : a.shape[ra - 2]
  const K = transposeA ? a.shape[ra - 2] : a.shape[ra - 1]
  const Kb = transposeB ? b.shape[rb - 1] : b.shape[rb - 2]
  const N = transposeB ? b.shape[rb - 2] : b.shape[rb - 1]
  const batchA = size(a.shape.slice(0, -2))
  const batchB = size(b.shape.slice(0, -2))
  // Plain batch-1 products already take XNNPACK (and keep its packed-weight cache).
  if (batchA === 1 && batchB === 1 && !transposeA && !transposeB) return orig(args)
  // Only the broadcasts the model uses (equal batches, or one side shared).
  if (K !== Kb || (batchA !== batchB && batchA !== 1 && batchB !== 1)) return orig(args)
  const outer = tf.broadcast_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2))
  const out = backend.makeOutput([...outer, M, N], "float32")
  const batch = Math.max(batchA, batchB)
  if (batch * M * N === 0) return out
  if (K === 0) {
    backend.typedArrayFromHeap(out).fill(0)
    return out
  }
  if (!wasmBmm) {
    wasmBmm = backend.wasm.cwrap("BatchMatMul", null, [
      "number", "array", "number", "number", "array", "number", "number", "number", "number",
    ])
  }
  // Materialise transposes into scratch memory (malloc first: it may grow the heap).
  let aOff = offsetOf(backend, a)
  let bOff = offsetOf(backend, b)
  const tmpA = transposeA ? backend.wasm._malloc(batchA * M * K * 4) >>> 0 : 0
  const tmpB = transposeB ? backend.wasm._malloc(batchB * K * N * 4) >>> 0 : 0
  if (transposeA || transposeB) {
    const heap = heapF32(backend)
    if (transposeA) {
      transpose2d(heap, aOff >> 2, heap, tmpA >> 2, batchA, K, M)
      aOff = tmpA
    }
    if (transposeB) {
      transpose2d(heap, bOff >> 2, heap, tmpB >> 2, batchB, N, K)
      bOff = tmpB
    }
  }
  const outOff = offsetOf(backend, out)
  const aShape = new Uint8Array(new Int32Array([1, M, K]).buffer)
  const bShape = new Uint8Array(new Int32Array([1, K, N]).buffer)
  const tfjs = backend.wasm.tfjs
  // A weight shared by every slice is packed by XNNPACK once (its operator is cached by id).
  let sharedB = batchB === 1 ? viewId(backend, bOff, K * N) : -1
  for (let i = 0; i < batch; i++) {
    const aId = viewId(backend, aOff + (batchA === 1 ? 0 : i * M * K * 4), M * K)
    const bId = sharedB >= 0 ? sharedB : viewId(backend, bOff + i * K * N * 4, K * N)
    const oId = viewId(backend, outOff + i * M * N * 4, M * N)
    wasmBmm(aId, aShape, 3, bId, bShape, 3, 0, 0, oId)
    tfjs.disposeData(aId)
    tfjs.disposeData(oId)
    if (sharedB < 0) tfjs.disposeData(bId) // also frees the XNNPACK operator packed for it
  }
  if (sharedB >= 0) tfjs.disposeData(sharedB)
  sharedB = -1
  if (tmpA) backend.wasm._free(tmpA)
  if (tmpB) backend.wasm._free(tmpB)
  return out
}

// ---------------------------------------------------------------- Transpose

function transposeKernel(args: KernelArgs, orig: KernelFunc): TensorInfo {
  const { x } = args.inputs
  const perm = args.attrs.perm as number[]
  const backend = args.backend
  if (x.dtype === "string") return orig(args)
  const outShape = perm.map((p) => x.shape[p])
  // Collapse: drop size-1 axes, then merge axes that stay adjacent in the permutation.
  const kept = x.shape.map((_, i) => i).filter((i) => x.shape[i] !== 1)
  const renum = new Map(kept.map((a, i) => [a, i]))
  const p2 = perm.filter((p) => x.shape[p] !== 1).map((p) => renum.get(p)!)
  const groups: number[][] = []
  for (const p of p2) {
    const g = groups[groups.length - 1]
    if (g && g[g.length - 1] + 1 === p) g.push(p)
    else groups.push([p])
  }
  const inOrder = [...groups].sort((g, h) => g[0] - h[0])
  const inShape = inOrder.map((g) => size(g.map((p) => x.shape[kept[p]])))
  const cperm = groups.map((g) => inOrder.indexOf(g))
  const out = backend.makeOutput(outShape, x.dtype)
  const n = size(x.shape)
  if (n === 0) return out
  const src = backend.typedArrayFromHeap(x)
  const dst = backend.typedArrayFromHeap(out)
  const r = cperm.length
  if (cperm.every((p, i) => p === i)) {
    dst.set(src)
  } else if (r === 2) {
    transpose2d(src, 0, dst, 0, 1, inShape[0], inShape[1])
  } else if (r === 3 && cperm[0] === 0 && cperm[1] === 2) {
    transpose2d(src, 0, dst, 0, inShape[0], inShape[1], inShape[2])
  } else if (r === 3 && cperm[0] === 1 && cperm[1] === 0) {
    // [A, B, C] -> [B, A, C]: copy rows of C
    swapMiddle(src, dst, 1, inShape[0], inShape[1], inShape[2])
  } else if (r === 4 && cperm[0] === 0 && cperm[1] === 2 && cperm[2] === 1) {
    // [Z, A, B, C] -> [Z, B, A, C] (attention head split/merge)
    swapMiddle(src, dst, inShape[0], inShape[1], inShape[2], inShape[3])
  } else {
    // General case: walk the output in order with an odometer over input strides.
    const inStrides = new Array<number>(r)
    let s = 1
    for (let i = r - 1; i >= 0; i--) {
      inStrides[i] = s
      s *= inShape[i]
    }
    const oShape = cperm.map((p) => inShape[p])
    const oStr = cperm.map((p) => inStrides[p])
    const idx = new Array<number>(r).fill(0)
    let off = 0
    for (let o = 0; o < n; o++) {
      dst[o] = src[off]
      for (let ax = r - 1; ax >= 0; ax--) {
        idx[ax]++
        off += oStr[ax]
        if (idx[ax] < oShape[ax]) break
        off -= oStr[ax] * oShape[ax]
        idx[ax] = 0
      }
    }
  }
  return out
}

/** [Z, A, B, C] -> [Z, B, A, C] with plain loops (rows of C are short: no subarray per row). */
function swapMiddle(src: TypedArray, dst: TypedArray, Z: number, A: number, B: number, C: number) {
  let s = 0
  for (let z = 0; z < Z; z++) {
    const base = z * A * B * C
    for (let i = 0; i < A; i++)
      for (let j = 0; j < B; j++) {
        let d = base + (j * A + i) * C
        for (let c = 0; c < C; c++) dst[d++] = src[s++]
      }
  }
}

// ---------------------------------------------------------------- Sum over leading axes

function sumKernel(args: KernelArgs, orig: KernelFunc): TensorInfo {
  const { x } = args.inputs
  const { axis, keepDims } = args.attrs as { axis: number | number[]; keepDims: boolean }
  const backend = args.backend
  if (x.dtype !== "float32") return orig(args)
  const rank = x.shape.length
  const axes = tf.util.parseAxisParam(axis, x.shape).sort((p, q) => p - q)
  const leading = axes.length > 0 && axes.length < rank && axes.every((a, i) => a === i)
  if (!leading) return orig(args)
  const outer = size(x.shape.slice(0, axes.length))
  const innerShape = x.shape.slice(axes.length)
  const inner = size(innerShape)
  const outShape = keepDims ? [...axes.map(() => 1), ...innerShape] : innerShape
  const out = backend.makeOutput(outShape, "float32")
  const src = backend.typedArrayFromHeap(x) as Float32Array
  const dst = backend.typedArrayFromHeap(out) as Float32Array
  dst.fill(0)
  for (let i = 0; i < outer; i++) {
    const base = i * inner
    for (let j = 0; j < inner; j++) dst[j] += src[base + j]
  }
  return out
}

// ---------------------------------------------------------------- Slice

function sliceKernel(args: KernelArgs): TensorInfo {
  const { x } = args.inputs
  const backend = args.backend
  const [begin, sz] = tf.slice_util.parseSliceParams(x as unknown as tf.Tensor, args.attrs.begin, args.attrs.size)
  if (x.dtype === "string") throw new Error("Slice of string tensors is not supported on wasm")
  const out = backend.makeOutput(sz, x.dtype)
  const n = size(sz)
  if (n === 0) return out
  const src = backend.typedArrayFromHeap(x)
  const dst = backend.typedArrayFromHeap(out)
  const r = x.shape.length
  if (r === 0) {
    dst[0] = src[0]
    return out
  }
  const strides = new Array<number>(r)
  let s = 1
  for (let i = r - 1; i >= 0; i--) {
    strides[i] = s
    s *= x.shape[i]
  }
  const row = sz[r - 1]
  const rows = n / row
  const idx = new Array<number>(r - 1).fill(0)
  let off = 0
  for (let i = 0; i < r; i++) off += begin[i] * strides[i]
  for (let k = 0; k < rows; k++) {
    if (row >= 64) dst.set(src.subarray(off, off + row), k * row)
    else for (let c = 0, d = k * row; c < row; c++) dst[d + c] = src[off + c]
    for (let ax = r - 2; ax >= 0; ax--) {
      idx[ax]++
      off += strides[ax]
      if (idx[ax] < sz[ax]) break
      off -= strides[ax] * sz[ax]
      idx[ax] = 0
    }
  }
  return out
}

// ---------------------------------------------------------------- UnsortedSegmentSum

function unsortedSegmentSum(args: KernelArgs): TensorInfo {
  const { x, segmentIds } = args.inputs
  const numSegments = args.attrs.numSegments as number
  const backend = args.backend
  const nIds = size(segmentIds.shape)
  const innerShape = x.shape.slice(segmentIds.shape.length)
  const inner = size(innerShape)
  const out = backend.makeOutput([numSegments, ...innerShape], x.dtype)
  const src = backend.typedArrayFromHeap(x)
  const ids = backend.typedArrayFromHeap(segmentIds)
  const dst = backend.typedArrayFromHeap(out)
  dst.fill(0)
  for (let i = 0; i < nIds; i++) {
    const seg = ids[i]
    if (seg < 0 || seg >= numSegments) continue // as TensorFlow: out-of-range ids are dropped
    const so = i * inner
    const d = seg * inner
    for (let j = 0; j < inner; j++) dst[d + j] += src[so + j]
  }
  return out
}
