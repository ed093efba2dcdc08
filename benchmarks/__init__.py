"""Benchmarks: the scratch (NumPy/Numba) implementation timed against its torch twin.

``benchmarks.harness`` holds the rules every benchmark follows (same process, same thread
count, outputs checked before timing, JIT compile time apart, interleaved repetitions);
``python -m benchmarks.conv`` times the convolutional autoencoder's layers and training step.
"""
