{
  "targets": [
    {
      "target_name": "moa_native",
      "sources": ["src/moa_native.c"],
      "cflags": ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-std=gnu11", "-Wall", "-Wno-unknown-pragmas"],
      "ldflags": ["-fopenmp"],
      "libraries": ["<!@(node blas.cjs)", "-lgomp", "-lm"]
    }
  ]
}
