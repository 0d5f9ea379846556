//! Coordinator–worker messages (filled in with the pipeline).
