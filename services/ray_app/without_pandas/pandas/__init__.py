"""Stands in for pandas inside the local Ray's processes: `import pandas` fails there, as if it were not installed.

Ray Serve imports pandas whenever it is installed (ray.serve._private.utils, only to encode DataFrame responses,
which this app never returns; the import is optional there), and every Ray process that imports Serve then
carries pandas and pyarrow: about 65 MB of RSS each, in six processes. The workshop's venv has pandas for the
notebooks, so the local launcher (services/ray_app/local_launcher.py) puts this folder first on the path of the
Ray processes it starts (helpers.layers.ray.local.ray_environment). The Ray image on EKS does not use it.
"""

raise ImportError("pandas is kept out of the local Ray's processes (services/ray_app/without_pandas)")
