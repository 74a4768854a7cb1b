"""``train`` component: see ``component.py``, ``trainjob.py`` and README.md."""
