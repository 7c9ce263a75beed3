"""Design-space sweeps: YAML specs of axes over config fields, a resumable content-hashed results store,
and engines that evaluate points on a local process pool or a Ray cluster."""
