#!/usr/bin/env node
// The `moa` command: registers tsx (so cluster files and our sources run as TypeScript) and
// starts the CLI.
import { register } from "tsx/esm/api"

register()
await import("../src/main.ts")
