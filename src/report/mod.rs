//! Rendering for people and machines.

pub mod desired;
