/**
 * Capital facts, read from the npm package `countries-list` at run time (no hand-written file).
 *
 * Exclusion rule: a country whose `capital` is empty after trimming whitespace has no answer, so
 * it is not a question. In countries-list 3.4.1 that drops 5 of 252 entries: Antarctica (AQ),
 * Bouvet Island (BV), Heard Island and McDonald Islands (HM), Macao (MO) and
 * U.S. Minor Outlying Islands (UM), leaving 247 facts. Names and capitals are kept exactly as
 * the package spells them (UTF-8, e.g. `Brasília`, `Chișinău`), only trimmed.
 */
import { countries } from "countries-list"

export interface CapitalFact {
  readonly code: string
  readonly country: string
  readonly capital: string
}

let cache: ReadonlyArray<CapitalFact> | undefined

/** Every country with a capital, ordered by ISO code. */
export const capitalFacts = (): ReadonlyArray<CapitalFact> => {
  if (cache) return cache
  const out: CapitalFact[] = []
  for (const [code, c] of Object.entries(countries)) {
    const capital = (c.capital ?? "").trim()
    const country = (c.name ?? "").trim()
    if (capital.length === 0 || country.length === 0) continue
    out.push({ code, country, capital })
  }
  out.sort((a, b) => (a.code < b.code ? -1 : a.code > b.code ? 1 : 0))
  cache = out
  return out
}

/** Countries the package lists without a capital (excluded from the skill). */
export const countriesWithoutCapital = (): string[] =>
  Object.entries(countries)
    .filter(([, c]) => (c.capital ?? "").trim().length === 0)
    .map(([code]) => code)
    .sort()

let byName: Map<string, CapitalFact> | undefined
export const factByCountry = (country: string): CapitalFact | undefined => {
  if (!byName) byName = new Map(capitalFacts().map((f) => [f.country.toLowerCase(), f]))
  return byName.get(country.trim().toLowerCase())
}

/** The CI-size subset: the first `n` facts whose names are plain ASCII and short, by ISO code. */
export const ciCapitalFacts = (n = 12): ReadonlyArray<CapitalFact> =>
  capitalFacts()
    .filter((f) => /^[A-Za-z ]+$/.test(f.country + f.capital) && f.country.length <= 10 && f.capital.length <= 10)
    .slice(0, n)
