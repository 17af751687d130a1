/**
 * Flag parsing for thin agent programs (`moa-expert`, `moa-coordinator`): `--name value` flags,
 * numbers ≥ 0, `--help`, and one way to fail — the program's name, what is wrong, the usage line,
 * exit code 2.
 */
export interface ProgramArgs {
  readonly args: ReadonlyArray<string>
  /** Print `<program>: <msg>` and the usage to stderr, exit 2. */
  die(msg: string): never
  /** The value after `--<name>`, or undefined when the flag is absent. */
  flag(name: string): string | undefined
  /** `--<name>` as a finite number ≥ 0, or undefined when absent. */
  num(name: string): number | undefined
  has(name: string): boolean
}

export const programArgs = (program: string, usage: string, argv: ReadonlyArray<string> = process.argv.slice(2)): ProgramArgs => {
  const die = (msg: string): never => {
    process.stderr.write(`${program}: ${msg}\n${usage}`)
    process.exit(2)
  }
  const flag = (name: string): string | undefined => {
    const i = argv.indexOf(`--${name}`)
    if (i < 0) return undefined
    const v = argv[i + 1]
    if (v === undefined || v.startsWith("--")) die(`--${name} needs a value`)
    return v
  }
  const num = (name: string): number | undefined => {
    const v = flag(name)
    if (v === undefined) return undefined
    const n = Number(v)
    if (!Number.isFinite(n) || n < 0) die(`--${name} must be a number ≥ 0, got ${JSON.stringify(v)}`)
    return n
  }
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(usage)
    process.exit(0)
  }
  return { args: argv, die, flag, num, has: (name) => argv.includes(`--${name}`) }
}
