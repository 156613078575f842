//! Decode arbitrary bytes; whatever decodes must re-encode to a fixed point that decodes to the
//! same attributes (FINGERPRINT is recomputed, so only its value may change). The same property
//! runs under proptest in `pipe-core/tests/stun_vectors.rs` (`roundtrip`): keep them in step.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipe_core::stun::{decode, Attribute, Message};

fn without_fingerprint_value(m: &Message) -> Message {
    let mut m = m.clone();
    for a in &mut m.attributes {
        if let Attribute::Fingerprint(v) = a {
            *v = 0;
        }
    }
    m
}

fuzz_target!(|data: &[u8]| {
    let _ = Message::verify_integrity(data, b"key");
    let Ok(m1) = decode(data) else { return };
    let b1 = m1.encode();
    let m2 = decode(&b1).expect("re-encoded message must decode");
    let b2 = m2.encode();
    assert_eq!(b1, b2, "encode∘decode is not a fixed point");
    assert_eq!(decode(&b2).as_ref(), Ok(&m2));
    assert_eq!(
        without_fingerprint_value(&m1),
        without_fingerprint_value(&m2)
    );
});
