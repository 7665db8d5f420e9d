"""What the model reads: manifests, audio decoding and augmentation, and the on-disk
feature and text caches."""
