// Prints the linker flags for OpenBLAS, for binding.gyp (`<!@(node blas.cjs)`).
// Prefers Debian's OpenMP build of OpenBLAS (libopenblas0-openmp) so BLAS and our own OpenMP
// loops share one thread pool; falls back to whatever `-lopenblas` resolves to.
const fs = require("node:fs")
const { execSync } = require("node:child_process")
let arch = ""
try { arch = execSync("gcc -print-multiarch", { stdio: ["ignore", "pipe", "ignore"] }).toString().trim() } catch {}
const dirs = [arch && `/usr/lib/${arch}/openblas-openmp`, "/usr/lib64/openblas-openmp"].filter(Boolean)
const omp = dirs.find((d) => fs.existsSync(`${d}/libopenblas.so.0`))
if (process.env.MOA_BLAS_LIBS) console.log(process.env.MOA_BLAS_LIBS)
else if (omp) console.log(`-L${omp} -l:libopenblas.so.0 -Wl,-rpath,${omp}`)
else console.log("-lopenblas")
