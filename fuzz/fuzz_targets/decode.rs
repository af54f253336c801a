//! Decodes arbitrary bytes as a stream of frames, in every version and with size limits from
//! tight to none: the decoder must never panic, and must consume exactly one frame per packet and
//! nothing on `Ok(None)` or an error.
#![no_main]

#[path = "../common/oracles.rs"]
mod oracles;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    oracles::decode_stream(stream, &oracles::context_from(selector));
});
