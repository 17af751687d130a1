export * from "./data/index.ts"
export * from "./preference/index.ts"
