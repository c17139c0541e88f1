"""Labels x stations x scene slots -> the index: KMA label and station readers, validation schemes, the routing
of label rows to chunk parts (parse time), the matching in each chunk job, and the monthly index (build_index)."""
