"""GPU-side LongSight (issue 18): the fused sparse-attention pipeline of ``kernels/longsight_fused.cu`` driven
through CuPy, and its NumPy reference (:mod:`cemsim.gpu.reference`), which runs anywhere."""
