//! pipe-core (being written)
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod rng;
pub mod stun;
