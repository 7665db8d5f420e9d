"""What maps audio and text to vectors: the mel front-end, the audio backbones (CED,
aisfx), the text encoders, the retrieval model on top, and its checkpoints."""
