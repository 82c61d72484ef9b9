"""The supervisor agent (chapter 08), its judge and its evaluation (chapter 09)."""
