//! Starling: a multi-core MQTT 3.1, 3.1.1 and 5.0 broker for IoT fleets.
//!
//! Start with ARCHITECTURE.md. The binary (`src/main.rs`) parses flags and calls [`run`]; everything
//! else is this library, so tests start the real server in-process.

pub mod codec;
pub mod message;
pub mod retained;
pub mod router;
pub mod topic;
