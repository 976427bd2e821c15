//! # Strongbox
//!
//! An encrypted storage engine modelled on InnoDB's data-at-rest encryption. This crate is
//! the facade: it re-exports the public API of the member crates.

#![forbid(unsafe_code)]

pub use strongbox_engine as engine;
pub use strongbox_keyring as keyring;
