"""Turn a bare GPU server into a private LLM appliance, and keep it upgraded."""

__version__ = "0.1.0"
