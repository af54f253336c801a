//! Decodes arbitrary bytes; every packet that comes out must encode again, with `encoded_len`
//! exact, and decode back to an equal packet.
#![no_main]

#[path = "../common/oracles.rs"]
mod oracles;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let ctx = oracles::context_from(selector);
    for (packet, _) in oracles::decode_stream(stream, &ctx) {
        oracles::check_round_trip(&packet, ctx.version);
    }
});
