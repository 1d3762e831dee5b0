"""Hydra's config package. Importing it registers the typed defaults of the model settings
(`lit_diffsr.methods.configs`, group `settings/`) that the model YAMLs compose."""

import lit_diffsr.methods.configs  # noqa: F401  (registers the `settings/` nodes with Hydra's ConfigStore)
