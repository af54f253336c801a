//! Placeholder until the codec implementation lands.
