"""Knowledge bases: chunking, embeddings, the vector store, and the operations
the knowledge tasks run.
"""
