"""The pieces of `benchmarks/peers.py`: the workloads with their float64 references
(`workloads`), and one module per contender family (`nnjit_side`, `numpy_side`, `torch_side`,
`jax_side`, `ort_side`), each run in its own worker process (`worker`)."""
