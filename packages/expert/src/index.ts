/**
 * @moa/expert — serving a model over the runtime: micro-batched generate, score, multi-adapter
 * serving with an LRU bound, and training jobs that make new adapter versions. See docs/expert.md.
 */
export { defineExpert, createExpert, ModelInfo, EXPERT_VERSION, type ExpertOptions, type ExpertState } from "./agent.ts"
export { Engine, defaultBatching, tokenLogProbs, type BatchingOptions, type EngineStats } from "./engine.ts"
export { AdapterStore, compareVersions, type AdapterListEntry } from "./adapters.ts"
export { Trainer, TrainRequest, TrainResponse, TrainAlgorithms, LoraSpec, type TrainAlgorithm } from "./train.ts"
export { buildTinyCheckpoint, toyExamples, TINY_ALPHABET, type TinyCheckpointOptions } from "./fixture.ts"
export { weightsBucket, registryBucket, weightsPrefix, uploadVersion, fetchVersion, storedVersions, followRegistry, ADAPTER_FILES, type RegistryCurrent } from "./weights.ts"
