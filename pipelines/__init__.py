"""Kubeflow Pipelines: ``refresh`` (data -> model -> validated synthetic pcaps -> registry) and
``generate`` (registered model -> validated synthetic pcaps), compiled to ``compiled/*.yaml``."""
