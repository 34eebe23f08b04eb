//! rlpo-model (work in progress)
