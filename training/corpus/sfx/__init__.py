"""The real-recordings corpus: sounds from Debian game and sound packages, mapped to concepts."""
