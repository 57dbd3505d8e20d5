//! The data endpoint forms: `PORT` and `EPRT` arguments, `227` and `229` reply texts.
//!
//! Whatever parses must name a port other than 0 and survive a round trip through its encoder
//! unchanged.

#![no_main]

use ftpgate::protocol::address::{
    encode_227, encode_229, encode_eprt_arg, encode_port_arg, parse_227, parse_229, parse_eprt_arg, parse_port_arg,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The session hands these parsers the lossy text of the argument.
    let text = String::from_utf8_lossy(data);
    for arg in [&*text, text.trim()] {
        if let Ok(a) = parse_port_arg(arg) {
            assert_ne!(a.port(), 0);
            let enc = encode_port_arg(a);
            assert_eq!(parse_port_arg(&enc), Ok(a), "PORT {arg:?} -> {enc:?}");
        }
        if let Ok(a) = parse_eprt_arg(arg) {
            assert_ne!(a.port(), 0);
            let enc = encode_eprt_arg(a);
            assert_eq!(parse_eprt_arg(&enc), Ok(a), "EPRT {arg:?} -> {enc:?}");
        }
    }
    if let Ok(a) = parse_227(data) {
        assert_ne!(a.port(), 0);
        let enc = encode_227(a);
        assert_eq!(parse_227(&enc[4..]), Ok(a), "227 {:?} -> {:?}", String::from_utf8_lossy(data), enc);
    }
    if let Ok(p) = parse_229(data) {
        assert_ne!(p, 0);
        let enc = encode_229(p);
        assert_eq!(parse_229(&enc[4..]), Ok(p), "229 {:?} -> {:?}", String::from_utf8_lossy(data), enc);
    }
});
