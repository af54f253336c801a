//! Decodes arbitrary bytes with this codec and with mqttbytes 0.6: wherever both accept the front
//! frame, they must agree on its length and key fields (the intended disagreements are listed in
//! `common/oracles.rs`).
#![no_main]

#[path = "../common/oracles.rs"]
mod oracles;

use libfuzzer_sys::fuzz_target;
use starling::codec::ProtocolVersion;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, frame)) = data.split_first() else {
        return;
    };
    let version = if selector & 1 == 0 {
        ProtocolVersion::V311
    } else {
        ProtocolVersion::V5
    };
    oracles::differential(frame, version);
});
