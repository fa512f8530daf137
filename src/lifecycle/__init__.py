"""The model's lifecycle after the final stage: registration, the champion/challenger gate (evidence gathered from
the registry, then a pure rule), and the ``python -m src.registry`` command."""
