/** The model engine tune builds on (notes/model-contract.md). */
export type { GPT as TuneModel, Tokenizer as TuneTokenizer } from "@moa/model"
