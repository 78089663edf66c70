"""``charter serve``: a constitutional layer in front of any model, behind an OpenAI-compatible
API (:mod:`charter.serve.layer` decides, :mod:`charter.serve.app` speaks HTTP)."""
