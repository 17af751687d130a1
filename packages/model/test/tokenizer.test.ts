import { describe, expect, it } from "vitest"
import { BPETokenizer, CharTokenizer, EOS, SEP, tokenizerFromJSON } from "../src/tokenizer.js"

const samples = [
  "capital of Brazil", "Brasília", "Chișinău", "emoji 🦀🇧🇷 and 👩‍👩‍👧", "tabs\tand\nnew lines  ", "日本語のテキスト",
  "add 037 045=0082", "", "   ", "ÅÄÖ åäö ß", "'s 've 'll", "z̸̢͔a̵l̶g̴o̷",
]
const corpus = ["the capital of Brazil is Brasília", "the capital of Moldova is Chișinău", "reverse abc cba", "add 12 30=42"].flatMap((s) => [s, s, s])

describe("char tokenizer", () => {
  it("round-trips any UTF-8 text exactly, using byte fallback for unseen characters", () => {
    const tok = CharTokenizer.train(corpus)
    for (const s of samples) expect(tok.decode(tok.encode(s))).toBe(s)
    expect(tok.encode("Brasília").length).toBe([..."Brasília"].length) // all seen characters
    expect(tok.encode("🦀").length).toBe(4) // unseen: 4 UTF-8 bytes
  })
  it("without byte fallback, names the unknown character", () => {
    const tok = CharTokenizer.train("abcd", { byteFallback: false })
    expect(tok.vocabSize).toBe(8)
    expect(() => tok.encode("abx")).toThrow(/"x" is not in the alphabet/)
  })
  it("keeps specials out of text and drops them on decode unless asked", () => {
    const tok = CharTokenizer.train("ab", { byteFallback: false })
    const ids = [tok.bos, ...tok.encode("ab"), SEP, ...tok.encode("ba"), EOS]
    expect(tok.decode(ids)).toBe("abba")
    expect(tok.decode(ids, { keepSpecial: true })).toBe("<|bos|>ab<|sep|>ba<|eos|>")
    expect(CharTokenizer.train(corpus).encode("<|eos|>")).not.toContain(EOS)
  })
  it("survives tokenizer.json", () => {
    const tok = CharTokenizer.train(corpus)
    const back = tokenizerFromJSON(JSON.parse(JSON.stringify(tok.toJSON())))
    for (const s of samples) expect(back.encode(s)).toEqual(tok.encode(s))
  })
})

describe("byte-level BPE", () => {
  it("learns merges up to the vocabulary size and compresses its corpus", () => {
    const tok = BPETokenizer.train(corpus, 300)
    expect(tok.vocabSize).toBe(300)
    const text = "the capital of Brazil is Brasília"
    expect(tok.encode(text).length).toBeLessThan(new TextEncoder().encode(text).length / 2)
  })
  it("round-trips any UTF-8 text exactly", () => {
    const tok = BPETokenizer.train(corpus, 320)
    for (const s of samples) expect(tok.decode(tok.encode(s))).toBe(s)
  })
  it("survives tokenizer.json with identical encodings", () => {
    const tok = BPETokenizer.train(corpus, 290)
    const back = tokenizerFromJSON(JSON.parse(JSON.stringify(tok.toJSON())))
    expect(back.vocabSize).toBe(290)
    for (const s of samples) expect(back.encode(s)).toEqual(tok.encode(s))
  })
  it("rejects a vocabulary smaller than the byte alphabet and bad files", () => {
    expect(() => BPETokenizer.train(corpus, 100)).toThrow(/>= 260/)
    expect(() => tokenizerFromJSON({ moa_tokenizer: 2 }, "x/tokenizer.json")).toThrow(/x\/tokenizer.json: unknown format/)
    expect(() => tokenizerFromJSON({ moa_tokenizer: 1, type: "bpe", special_tokens: ["<|pad|>", "<|bos|>", "<|eos|>", "<|sep|>"], merges: [[999, 4]] })).toThrow(/merge 0/)
  })
})
