//! Client bytes into the WebSocket adapter (handshake, frames, or a program of valid frames),
//! with everything read echoed back through its write path: no panic, no hang, and the bytes
//! come through intact (see `fuzz/common/websocket.rs`).
#![no_main]

#[path = "../common/websocket.rs"]
mod websocket;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = websocket::check(data);
});
