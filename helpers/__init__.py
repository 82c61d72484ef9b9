"""Helpers for the LLM-platform-on-EKS workshop: each module hides one piece of plumbing."""

__version__ = "0.1.0"
