"""The Ray Serve application (runs in the Ray image on EKS, under a local Ray on the laptop)."""
