// Preference optimization for moa experts: TRL's objectives as pure functions over tfjs tensors,
// their configs, cached reference log-probs and single-process trainers. See docs/preference.md.
export * from "./config.ts"
export { sequenceLogps, maskedWhiten, readMetrics as readPreferenceMetrics } from "./ops.ts"
export * from "./dpo.ts"
export * from "./simpo_orpo.ts"
export * from "./kto.ts"
export * from "./grpo.ts"
export * from "./ppo.ts"
export {
  completionBatch,
  completionLogps,
  greedyCompletions,
  PreferenceDataError,
  sampleCompletions,
  tokenLogps,
  type CompletionBatch,
  type Encoder,
  type PolicyModel,
  type SampleCompletionsOptions,
  type TextTokenizer,
  encodePreference,
  encodeUnpaired,
  encodePrompts,
  type TokenCompletion,
  type TokenLabelled,
  type TokenPair,
} from "./policy.ts"
export * from "./reference.ts"
export * from "./trainers.ts"
