"""The model families: the blog's mlp and a small cnn, and the user's own model."""
