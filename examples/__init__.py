"""Real example models and data (Fashion-MNIST, MobileNetV2, MiniLM) for shiftc tests and benchmarks."""
