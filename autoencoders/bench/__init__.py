"""Benchmarks: the scratch (NumPy/Numba) implementation timed against its torch twin.

``autoencoders.bench.harness`` holds the rules every benchmark follows (same process, same thread
count, outputs checked before and after timing, JIT compile time apart, blocks of calls after a
settle pause, alternating order) and ``measure``, which times any ``Case``; ``autoencoders.bench.flops``
the FLOP counting rule; ``autoencoders.bench.options`` the command-line options. Suites, each runnable
as ``autoencoders bench SUITE`` or ``python -m autoencoders.bench.SUITE``: ``ops`` (every layer, loss and
optimizer step), ``models`` (every model's training step), ``sweep`` (batch size and thread
count), ``peak`` (float32 matrix-multiply peak), ``conv`` (the conv layers of conv-ae and
conv-vae), ``load`` (the step beside competing processes), ``all``. ``models`` adds jax.jit as a
second peer with ``--peers torch,jax`` (``autoencoders.bench.jax_twins``). See docs/benchmarks/README.md.

``python -m autoencoders.bench.SUITE`` imports this package before NumPy: the pools' wait
settings (``autoencoders.threads.quiet_wait_policies``) are set here too, as the command sets them.
"""

from autoencoders.threads import quiet_wait_policies

quiet_wait_policies()
