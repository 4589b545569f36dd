"""What training and serving share: the manifest format and text encoding.

Nothing here imports torch or the web stack, so both sides can depend on it.
"""
