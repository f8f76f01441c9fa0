"""Publish: a verified image goes to its registry under the commit's tag, and the registry must serve it.

Takes a verified image and the run's credentials; hands on the digest the registry serves under the tag
(`registry.Pushed`), the cache tags pushed beside it, and the registry's tag list (`--skip-pushed`).

    registry   image names, credentials (Docker's own store; Docker Hub's variables for Docker Hub only),
               push with retries, the registry's API (tokens, manifests, tags), the local registry
"""
