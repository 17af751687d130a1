export * from "./jsonl.ts"
export * from "./prep.ts"
