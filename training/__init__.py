"""Training, evaluation and export of the emotion CNN (needs the ``train`` extra)."""
