//! The `BROKER.*` commands, one file per family. Each handler parses its
//! arguments into typed values, calls the registry, replicates a
//! deterministic form of what it did, and delivers what it must.

pub mod connections;
pub mod nodes;
pub mod publish;
pub mod rooms;
pub mod throttle;
