"""Chapter 06: the knowledge base, its embeddings and the vector stores."""
