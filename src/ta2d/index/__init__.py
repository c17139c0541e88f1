"""Labels x stations x scene slots -> the index, splits and chunk manifests (rule build_index):
KMA label and station readers, validation schemes."""
