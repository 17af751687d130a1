export * from "./skills.ts"
export { capitalFacts, ciCapitalFacts, countriesWithoutCapital, factByCountry, type CapitalFact } from "./capital.ts"
export { makeRng, randInt, pick, shuffle, fnv1a } from "./rng.ts"
