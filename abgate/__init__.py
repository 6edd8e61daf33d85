"""abgate: blind A/B experiments of unreleased LLM checkpoints behind an LLM gateway."""

__version__ = "0.1.0"
