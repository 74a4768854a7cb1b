"""Kubeflow Pipelines components: one folder per stage, each a thin wrapper over the library.

Every component is a lightweight Python component whose body imports ``netdiffusion`` (installed
in each image) and ``components.common`` for artifact/URI plumbing, so the same function runs in
its container on a cluster and in a subprocess under ``kfp.local``.
"""
