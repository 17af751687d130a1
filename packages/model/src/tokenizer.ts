// Tokenizers: a character tokenizer (tiny tasks) and a byte-level BPE trained from a corpus.
// Both reserve ids 0..3 for the special tokens pad, bos, eos, sep, and both round-trip any
// UTF-8 text exactly: the char tokenizer falls back to UTF-8 bytes for characters it has
// not seen, and BPE works on UTF-8 bytes from the start.

export const SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|sep|>"] as const
export const PAD = 0
export const BOS = 1
export const EOS = 2
export const SEP = 3
const N_SPECIAL = SPECIAL_TOKENS.length
const N_BYTES = 256

export interface Tokenizer {
  readonly kind: "char" | "bpe"
  readonly vocabSize: number
  readonly pad: number
  readonly bos: number
  readonly eos: number
  readonly sep: number
  /** text → ids (special tokens are never produced from text) */
  encode(text: string): number[]
  /** ids → text; special tokens are dropped unless `keepSpecial` */
  decode(ids: readonly number[], opts?: { keepSpecial?: boolean }): string
  toJSON(): TokenizerJSON
}

export type TokenizerJSON =
  | { moa_tokenizer: 1; type: "char"; special_tokens: string[]; byte_fallback: boolean; chars: string[] }
  | { moa_tokenizer: 1; type: "bpe"; special_tokens: string[]; merges: [number, number][] }

const utf8 = new TextEncoder()
const utf8dec = new TextDecoder("utf-8")

abstract class Base implements Tokenizer {
  abstract readonly kind: "char" | "bpe"
  abstract readonly vocabSize: number
  readonly pad = PAD
  readonly bos = BOS
  readonly eos = EOS
  readonly sep = SEP
  abstract encode(text: string): number[]
  abstract toJSON(): TokenizerJSON
  /** bytes of a non-special token */
  protected abstract tokenBytes(id: number): Uint8Array

  decode(ids: readonly number[], opts: { keepSpecial?: boolean } = {}): string {
    const parts: string[] = []
    let bytes: number[] = []
    const flush = () => {
      if (bytes.length) parts.push(utf8dec.decode(new Uint8Array(bytes)))
      bytes = []
    }
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize)
        throw new Error(`decode: token id ${id} is outside the vocabulary (0..${this.vocabSize - 1})`)
      if (id < N_SPECIAL) {
        if (opts.keepSpecial) {
          flush()
          parts.push(SPECIAL_TOKENS[id])
        }
        continue
      }
      for (const b of this.tokenBytes(id)) bytes.push(b)
    }
    flush()
    return parts.join("")
  }
}

// ---------------------------------------------------------------- characters

export class CharTokenizer extends Base {
  readonly kind = "char" as const
  readonly vocabSize: number
  private readonly ids = new Map<string, number>()
  private readonly bytesOf: Uint8Array[] = []
  private readonly offset: number

  /** `chars`: the alphabet; `byteFallback` adds 256 byte tokens so unseen characters still round-trip. */
  constructor(readonly chars: string[], readonly byteFallback = true) {
    super()
    this.offset = N_SPECIAL + (byteFallback ? N_BYTES : 0)
    chars.forEach((c, i) => {
      if ([...c].length !== 1) throw new Error(`CharTokenizer: "${c}" is not a single character`)
      if (this.ids.has(c)) throw new Error(`CharTokenizer: duplicate character "${c}"`)
      this.ids.set(c, this.offset + i)
      this.bytesOf.push(utf8.encode(c))
    })
    this.vocabSize = this.offset + chars.length
  }

  /** Alphabet = every distinct character of the corpus, sorted. */
  static train(corpus: string | string[], opts: { byteFallback?: boolean } = {}): CharTokenizer {
    const set = new Set<string>()
    for (const text of Array.isArray(corpus) ? corpus : [corpus]) for (const c of text) set.add(c)
    return new CharTokenizer([...set].sort(), opts.byteFallback ?? true)
  }

  encode(text: string): number[] {
    const out: number[] = []
    for (const c of text) {
      const id = this.ids.get(c)
      if (id !== undefined) out.push(id)
      else if (this.byteFallback) for (const b of utf8.encode(c)) out.push(N_SPECIAL + b)
      else throw new Error(`CharTokenizer: character "${c}" is not in the alphabet (train with byteFallback to accept any text)`)
    }
    return out
  }

  protected tokenBytes(id: number): Uint8Array {
    if (id < this.offset) return Uint8Array.of(id - N_SPECIAL)
    return this.bytesOf[id - this.offset]
  }

  toJSON(): TokenizerJSON {
    return { moa_tokenizer: 1, type: "char", special_tokens: [...SPECIAL_TOKENS], byte_fallback: this.byteFallback, chars: this.chars }
  }
}

// ---------------------------------------------------------------- byte-level BPE

// GPT-2's pre-tokenizer: merges never cross these pieces (words with their leading space).
const PIECES = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu

function pieces(text: string): string[] {
  return text.match(PIECES) ?? []
}

export class BPETokenizer extends Base {
  readonly kind = "bpe" as const
  readonly vocabSize: number
  private readonly rank = new Map<number, number>() // pair key → merge index
  private readonly bytesOf: Uint8Array[] = []
  private readonly cache = new Map<string, number[]>()

  constructor(readonly merges: [number, number][]) {
    super()
    for (let b = 0; b < N_BYTES; b++) this.bytesOf.push(Uint8Array.of(b))
    merges.forEach(([a, b], i) => {
      const id = N_SPECIAL + N_BYTES + i
      for (const x of [a, b])
        if (!Number.isInteger(x) || x < N_SPECIAL || x >= id)
          throw new Error(`BPETokenizer: merge ${i} uses token ${x}, which is not defined before it`)
      this.rank.set(pairKey(a, b), i)
      const ba = this.bytesOf[a - N_SPECIAL]
      const bb = this.bytesOf[b - N_SPECIAL]
      const m = new Uint8Array(ba.length + bb.length)
      m.set(ba)
      m.set(bb, ba.length)
      this.bytesOf.push(m)
    })
    this.vocabSize = N_SPECIAL + N_BYTES + merges.length
  }

  /** Learn merges from a corpus until the vocabulary (specials + 256 bytes + merges) reaches `vocabSize`. */
  static train(corpus: string | string[], vocabSize: number): BPETokenizer {
    const base = N_SPECIAL + N_BYTES
    if (!Number.isInteger(vocabSize) || vocabSize < base)
      throw new Error(`BPE vocabSize must be an integer >= ${base} (4 special + 256 byte tokens), got ${vocabSize}`)
    const counts = new Map<string, number>()
    for (const text of Array.isArray(corpus) ? corpus : [corpus])
      for (const p of pieces(text)) counts.set(p, (counts.get(p) ?? 0) + 1)
    const words = [...counts.entries()].map(([w, n]) => ({ ids: Array.from(utf8.encode(w), (b) => b + N_SPECIAL), n }))
    const merges: [number, number][] = []
    for (let next = base; next < vocabSize; next++) {
      const pairCounts = new Map<number, number>()
      for (const { ids, n } of words)
        for (let i = 0; i + 1 < ids.length; i++) {
          const k = pairKey(ids[i], ids[i + 1])
          pairCounts.set(k, (pairCounts.get(k) ?? 0) + n)
        }
      let best = -1
      let bestN = 1 // a pair seen once is not worth a token
      for (const [k, n] of pairCounts) if (n > bestN || (n === bestN && best >= 0 && k < best)) [best, bestN] = [k, n]
      if (best < 0) break
      const a = Math.floor(best / PAIR_BASE)
      const b = best % PAIR_BASE
      merges.push([a, b])
      for (const w of words) w.ids = mergePair(w.ids, a, b, next)
    }
    return new BPETokenizer(merges)
  }

  encode(text: string): number[] {
    const out: number[] = []
    for (const p of pieces(text)) {
      let ids = this.cache.get(p)
      if (!ids) {
        ids = this.encodePiece(p)
        if (this.cache.size < 100_000) this.cache.set(p, ids)
      }
      for (const id of ids) out.push(id)
    }
    return out
  }

  private encodePiece(p: string): number[] {
    let ids = Array.from(utf8.encode(p), (b) => b + N_SPECIAL)
    for (;;) {
      let bestRank = Infinity
      let bestAt = -1
      for (let i = 0; i + 1 < ids.length; i++) {
        const r = this.rank.get(pairKey(ids[i], ids[i + 1]))
        if (r !== undefined && r < bestRank) [bestRank, bestAt] = [r, i]
      }
      if (bestAt < 0) return ids
      ids = mergePair(ids, ids[bestAt], ids[bestAt + 1], N_SPECIAL + N_BYTES + bestRank)
    }
  }

  protected tokenBytes(id: number): Uint8Array {
    return this.bytesOf[id - N_SPECIAL]
  }

  toJSON(): TokenizerJSON {
    return { moa_tokenizer: 1, type: "bpe", special_tokens: [...SPECIAL_TOKENS], merges: this.merges }
  }
}

const PAIR_BASE = 1 << 20
const pairKey = (a: number, b: number) => a * PAIR_BASE + b

function mergePair(ids: number[], a: number, b: number, id: number): number[] {
  const out: number[] = []
  for (let i = 0; i < ids.length; i++) {
    if (i + 1 < ids.length && ids[i] === a && ids[i + 1] === b) {
      out.push(id)
      i++
    } else out.push(ids[i])
  }
  return out
}

// ---------------------------------------------------------------- tokenizer.json

/** Rebuild a tokenizer from its JSON; `source` names the file in error messages. */
export function tokenizerFromJSON(json: unknown, source = "tokenizer.json"): Tokenizer {
  const j = json as Partial<Record<string, unknown>>
  const fail = (why: string): never => {
    throw new Error(`${source}: ${why}`)
  }
  if (!j || typeof j !== "object") fail("not a JSON object")
  if (j.moa_tokenizer !== 1) fail(`unknown format (expected "moa_tokenizer": 1, got ${JSON.stringify(j.moa_tokenizer)})`)
  if (JSON.stringify(j.special_tokens) !== JSON.stringify(SPECIAL_TOKENS))
    fail(`special_tokens must be ${JSON.stringify(SPECIAL_TOKENS)}`)
  if (j.type === "char") {
    if (!Array.isArray(j.chars) || !j.chars.every((c) => typeof c === "string")) fail('"chars" must be an array of strings')
    return new CharTokenizer(j.chars as string[], j.byte_fallback !== false)
  }
  if (j.type === "bpe") {
    if (!Array.isArray(j.merges) || !j.merges.every((m) => Array.isArray(m) && m.length === 2))
      fail('"merges" must be an array of [id, id] pairs')
    return new BPETokenizer(j.merges as [number, number][])
  }
  return fail(`unknown tokenizer type ${JSON.stringify(j.type)} (expected "char" or "bpe")`)
}
