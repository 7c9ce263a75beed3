"""GPU-side LongSight (issue 18): the fused sparse-attention pipeline of ``kernels/longsight_fused.cu`` driven
through CuPy, the b1-MMA SCF filter of ``kernels/scf_frag.cu`` on signs in MMA fragment order
(:mod:`cemsim.gpu.sign_layout`), and the NumPy reference (:mod:`cemsim.gpu.reference`), which runs anywhere."""
