"""Chapter 03: the Ray Serve app's library side (local launcher arguments, the RayService on EKS)."""
