//! STUN codec properties over messages that decode: each case builds a [`Message`] from
//! generated attributes (every kind the codec knows, with values inside its rules, plus unknown
//! comprehension-optional and -required types), encodes it with the codec's own encoder
//! (optionally with MESSAGE-INTEGRITY and FINGERPRINT, optionally with a classic RFC 3489
//! cookie), and checks against what was generated:
//! - decode∘encode gives back exactly the attributes that went in, then the computed
//!   MESSAGE-INTEGRITY and FINGERPRINT; the header helpers agree with the bytes;
//! - every strict prefix is refused; every single-byte change is refused when a FINGERPRINT is
//!   present (CRC-32 catches every burst of ≤ 32 bits), or else caught by the integrity check;
//! - the integrity check accepts the key it was made with and refuses any other.
//!
//! Each property counts the cases that reached its check and prints the count; a property whose
//! generator stopped producing decodable messages fails here instead of passing on early
//! returns. Case counts are small enough for the file to run in well under a second.

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use pipe_core::stun::{
    attr_type as t, decode, decode_any_cookie, is_stun, message_len, peek_transaction_id,
    Attribute, Class, DecodeError, EncodeOptions, IntegrityError, Message, Method, TransactionId,
    MAGIC_COOKIE,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const CASES: u32 = 400;

/// Attribute types the codec decodes into a named variant (or length-checks), which an
/// `Unknown` attribute must not use.
const KNOWN: &[u16] = &[
    t::MAPPED_ADDRESS,
    t::RESPONSE_ADDRESS,
    t::CHANGE_REQUEST,
    t::SOURCE_ADDRESS,
    t::CHANGED_ADDRESS,
    t::USERNAME,
    t::MESSAGE_INTEGRITY,
    t::ERROR_CODE,
    t::UNKNOWN_ATTRIBUTES,
    t::REALM,
    t::NONCE,
    t::MESSAGE_INTEGRITY_SHA256,
    t::XOR_MAPPED_ADDRESS,
    t::PRIORITY,
    t::PADDING,
    t::RESPONSE_PORT,
    t::SOFTWARE,
    t::FINGERPRINT,
    t::ICE_CONTROLLED,
    t::ICE_CONTROLLING,
    t::RESPONSE_ORIGIN,
    t::OTHER_ADDRESS,
];

fn sock() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

/// Up to `max_chars` Unicode scalars (at most 4 bytes each, so 127 chars stay under the
/// codec's 763-byte text limit and 128 under USERNAME's 512).
fn text(max_chars: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..=max_chars).prop_map(|v| v.into_iter().collect())
}

fn attribute() -> impl Strategy<Value = Attribute> {
    prop_oneof![
        sock().prop_map(Attribute::MappedAddress),
        sock().prop_map(Attribute::XorMappedAddress),
        sock().prop_map(Attribute::ResponseOrigin),
        sock().prop_map(Attribute::OtherAddress),
        sock().prop_map(Attribute::SourceAddress),
        sock().prop_map(Attribute::ChangedAddress),
        any::<u16>().prop_map(Attribute::ResponsePort),
        // USERNAME: < 513 bytes; 128 chars of ≤ 4 bytes stay under it.
        text(128).prop_map(Attribute::Username),
        text(20).prop_map(Attribute::Software),
        text(127).prop_map(Attribute::Realm),
        text(12).prop_map(Attribute::Nonce),
        any::<u32>().prop_map(Attribute::Priority),
        any::<u64>().prop_map(Attribute::IceControlled),
        any::<u64>().prop_map(Attribute::IceControlling),
        (any::<bool>(), any::<bool>()).prop_map(|(change_ip, change_port)| {
            Attribute::ChangeRequest {
                change_ip,
                change_port,
            }
        }),
        (300u16..700, text(30)).prop_map(|(code, reason)| Attribute::ErrorCode { code, reason }),
        proptest::collection::vec(any::<u16>(), 0..8).prop_map(Attribute::UnknownAttributes),
        (
            any::<u16>().prop_filter("a type the codec knows", |t| !KNOWN.contains(t)),
            proptest::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(|(typ, v)| Attribute::Unknown {
                typ,
                value: Bytes::from(v),
            }),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    class: Class,
    method: Method,
    id: TransactionId,
    attrs: Vec<Attribute>,
    key: Option<Vec<u8>>,
    fingerprint: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![
            Just(Class::Request),
            Just(Class::Indication),
            Just(Class::Success),
            Just(Class::Error),
        ],
        prop_oneof![
            3 => Just(Method::Binding),
            1 => (0u16..0x1000)
                .prop_filter("Binding", |m| *m != 1)
                .prop_map(Method::Other),
        ],
        any::<[u8; 12]>().prop_map(TransactionId),
        proptest::collection::vec(attribute(), 0..10),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 1..24)),
        any::<bool>(),
    )
        .prop_map(|(class, method, id, attrs, key, fingerprint)| Case {
            class,
            method,
            id,
            attrs,
            key,
            fingerprint,
        })
}

impl Case {
    fn message(&self) -> Message {
        let mut m = Message::new(self.class, self.method, self.id);
        m.attributes = self.attrs.clone();
        m
    }

    fn encode(&self) -> Bytes {
        self.message().encode_with(&EncodeOptions {
            integrity_key: self.key.as_deref(),
            fingerprint: self.fingerprint,
        })
    }
}

/// Run `check` on `CASES` generated values; it returns whether the case reached the property's
/// check. At least `min_percent` of the cases must, and the count is printed.
fn run_counted<S: Strategy>(
    name: &str,
    min_percent: u32,
    strategy: S,
    check: impl Fn(&S::Value) -> bool,
) {
    let reached = Cell::new(0u32);
    let ran = Cell::new(0u32);
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |v| {
            ran.set(ran.get() + 1);
            if check(&v) {
                reached.set(reached.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    let (reached, ran) = (reached.get(), ran.get());
    eprintln!("{name}: {reached} of {ran} cases reached the check");
    assert!(ran >= CASES, "{name}: ran {ran} cases");
    assert!(
        reached * 100 >= ran * min_percent,
        "{name}: only {reached} of {ran} cases reached the check (want ≥ {min_percent} %)"
    );
}

/// Decode `raw` and return the attributes past the generated ones, checking the generated
/// ones came back in order.
fn decoded_extra(c: &Case, raw: &[u8]) -> Vec<Attribute> {
    let m = decode(raw).unwrap_or_else(|e| panic!("{c:?} encoded to {raw:02x?}: {e}"));
    assert_eq!(
        (m.class, m.method, m.transaction_id),
        (c.class, c.method, c.id)
    );
    let n = c.attrs.len();
    assert_eq!(m.attributes[..n], c.attrs[..], "the attributes, in order");
    m.attributes[n..].to_vec()
}

#[test]
fn prop_encoded_messages_decode_to_what_was_built() {
    run_counted("decode∘encode", 100, case(), |c| {
        let raw = c.encode();
        let m = decode(&raw).unwrap_or_else(|e| panic!("{c:?} encoded to {raw:02x?}: {e}"));
        let extra = decoded_extra(c, &raw);
        let mut extra = extra.iter();
        if let Some(key) = &c.key {
            assert!(matches!(extra.next(), Some(Attribute::MessageIntegrity(_))));
            assert_eq!(Message::verify_integrity(&raw, key), Ok(()));
        } else {
            assert_eq!(
                Message::verify_integrity(&raw, b"k"),
                Err(IntegrityError::Missing)
            );
        }
        assert_eq!(m.has_fingerprint(), c.fingerprint);
        if c.fingerprint {
            assert!(matches!(extra.next(), Some(Attribute::Fingerprint(_))));
        }
        assert_eq!(extra.next(), None, "nothing else was added");
        // Header helpers on the same bytes.
        assert!(is_stun(&raw));
        assert_eq!(message_len(&raw), Some(raw.len()));
        assert_eq!(peek_transaction_id(&raw), Some(c.id));
        assert_eq!(raw.len() % 4, 0);
        // The accessors find what was put in (the first of each kind).
        let xor = c.attrs.iter().find_map(|a| match a {
            Attribute::XorMappedAddress(s) => Some(*s),
            _ => None,
        });
        let plain = c.attrs.iter().find_map(|a| match a {
            Attribute::MappedAddress(s) => Some(*s),
            _ => None,
        });
        assert_eq!(m.mapped_address(), xor.or(plain));
        let other = c.attrs.iter().find_map(|a| match a {
            Attribute::OtherAddress(s) => Some(*s),
            _ => None,
        });
        assert_eq!(m.other_address(), other);
        let origin = c.attrs.iter().find_map(|a| match a {
            Attribute::ResponseOrigin(s) => Some(*s),
            _ => None,
        });
        assert_eq!(m.response_origin(), origin);
        let error = c.attrs.iter().find_map(|a| match a {
            Attribute::ErrorCode { code, reason } => Some((*code, reason.as_str())),
            _ => None,
        });
        assert_eq!(m.error_code(), error);
        // Re-encoding the decoded message (its MI as carried, FP recomputed) is a fixed point.
        assert_eq!(m.encode(), raw);
        true
    });
}

#[test]
fn prop_classic_cookie_round_trips() {
    // Classic (RFC 3489) messages carry no XOR addresses; the cookie field is kept as given.
    let classic = (
        case().prop_map(|mut c| {
            c.attrs
                .retain(|a| !matches!(a, Attribute::XorMappedAddress(_)));
            c
        }),
        any::<u32>().prop_filter("the RFC 5389 cookie", |k| *k != MAGIC_COOKIE),
    );
    run_counted("classic cookie", 100, classic, |(c, cookie)| {
        let opts = EncodeOptions {
            integrity_key: c.key.as_deref(),
            fingerprint: c.fingerprint,
        };
        let raw = c.message().encode_with_cookie(&opts, *cookie);
        assert_eq!(decode(&raw), Err(DecodeError::BadMagicCookie));
        let (m, got) = decode_any_cookie(&raw).expect("a classic message decodes");
        assert_eq!(got, *cookie);
        assert_eq!(m.transaction_id, c.id);
        assert_eq!(m.attributes[..c.attrs.len()], c.attrs[..]);
        assert_eq!(
            m.attributes.len(),
            c.attrs.len() + usize::from(c.key.is_some()) + usize::from(c.fingerprint)
        );
        true
    });
}

#[test]
fn prop_every_strict_prefix_is_refused() {
    run_counted("prefixes", 100, case(), |c| {
        let raw = c.encode();
        decoded_extra(c, &raw);
        for cut in 0..raw.len() {
            assert!(
                decode(&raw[..cut]).is_err(),
                "a {cut}-byte prefix of a {}-byte message decoded",
                raw.len()
            );
        }
        true
    });
}

#[test]
fn prop_single_byte_changes_are_detected() {
    // With FINGERPRINT every change fails decoding or removes the fingerprint; without it but
    // with MESSAGE-INTEGRITY, every change fails decoding or the integrity check. Cases with
    // neither are not protected (that is what the two attributes are for) and are filtered out.
    let protected = case().prop_filter("unprotected", |c| c.fingerprint || c.key.is_some());
    run_counted(
        "single-byte changes",
        100,
        (protected, any::<u16>(), 1..=255u8),
        |(c, pos, x)| {
            let raw = c.encode();
            decoded_extra(c, &raw);
            single_byte_change_is_detected(c, &raw, usize::from(*pos) % raw.len(), *x);
            true
        },
    );
}

/// The offsets of the length fields (two bytes each) of the attributes of `raw`, a message
/// the codec encoded.
fn length_fields(raw: &[u8]) -> Vec<usize> {
    let mut fields = Vec::new();
    let mut at = 20;
    while at + 4 <= raw.len() {
        fields.push(at + 2);
        let len = usize::from(u16::from_be_bytes([raw[at + 2], raw[at + 3]]));
        at += 4 + len.div_ceil(4) * 4;
    }
    assert_eq!(at, raw.len(), "the attributes end with the message");
    fields
}

/// `raw` (encoded from `c`) with byte `pos` xored with `x` (non-zero) must not decode to a
/// message that still looks protected.
fn single_byte_change_is_detected(c: &Case, raw: &[u8], pos: usize, x: u8) {
    let mut bad = raw.to_vec();
    bad[pos] ^= x;
    let decoded = decode(&bad);
    if c.fingerprint {
        // A change that still decodes has lost its FINGERPRINT, which a receiver that wants one
        // sees. Only two kinds of change can do that: one that rewrites FINGERPRINT's own type
        // (the last attribute's first two bytes), so that it becomes an unknown attribute, and
        // one that rewrites an attribute's length so that the walk over the attributes no
        // longer reaches FINGERPRINT (a longer attribute that runs exactly to the message's end
        // and takes the rest in, say). Anywhere else, the CRC-32 catches it.
        let fp_type = raw.len() - 8..raw.len() - 6;
        let in_a_length = length_fields(raw)
            .into_iter()
            .any(|at| (at..at + 2).contains(&pos));
        if let Ok(m) = decoded {
            assert!(
                (fp_type.contains(&pos) || in_a_length) && !m.has_fingerprint(),
                "byte {pos} ^ {x:#04x} of a fingerprinted message went unnoticed"
            );
        }
    } else {
        let key = c.key.as_deref().unwrap();
        assert!(
            decoded.is_err() || Message::verify_integrity(&bad, key).is_err(),
            "byte {pos} ^ {x:#04x} of an integrity-protected message went unnoticed"
        );
    }
}

/// The case `prop_single_byte_changes_are_detected` shrank to when its check still allowed
/// only a change of FINGERPRINT's type to decode (about 1 run of the file in 200): the length
/// of UNKNOWN-ATTRIBUTES (6, at byte 23) ^ 0x36 = 48 takes in NONCE, MESSAGE-INTEGRITY and
/// FINGERPRINT as 21 more attribute types, and the message decodes, without a fingerprint.
#[test]
fn a_length_that_takes_in_the_fingerprint_drops_it() {
    let c = Case {
        class: Class::Request,
        method: Method::Binding,
        id: TransactionId([0; 12]),
        attrs: vec![
            Attribute::UnknownAttributes(vec![0, 0, 0]),
            Attribute::Nonce("¡".into()),
        ],
        key: Some(vec![0]),
        fingerprint: true,
    };
    let raw = c.encode();
    decoded_extra(&c, &raw);
    let mut bad = raw.to_vec();
    bad[23] ^= 0x36;
    let m = decode(&bad).expect("still a well-formed message");
    assert!(!m.has_fingerprint(), "{m:?}");
    assert!(Message::verify_integrity(&bad, &[0]).is_err());
    assert_eq!(
        m.attributes,
        [Attribute::UnknownAttributes(
            bad[24..]
                .chunks(2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .collect()
        )]
    );
    single_byte_change_is_detected(&c, &raw, 23, 0x36);
    // Every other change of a byte of that message is caught or loses the fingerprint.
    for pos in 0..raw.len() {
        for x in 1..=255u8 {
            single_byte_change_is_detected(&c, &raw, pos, x);
        }
    }
}

fn trim(k: &[u8]) -> &[u8] {
    let end = k.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    &k[..end]
}

#[test]
fn prop_integrity_refuses_any_other_key() {
    let keyed = (
        case().prop_filter("no key", |c| c.key.is_some()),
        proptest::collection::vec(any::<u8>(), 0..24),
    )
        // HMAC zero-pads keys to its block size, so keys that differ only in trailing zero
        // bytes are the same key.
        .prop_filter("the same key", |(c, other)| {
            trim(c.key.as_deref().unwrap()) != trim(other)
        });
    run_counted("other keys", 100, keyed, |(c, other)| {
        let raw = c.encode();
        decoded_extra(c, &raw);
        let key = c.key.as_deref().unwrap();
        assert_eq!(Message::verify_integrity(&raw, key), Ok(()));
        assert_eq!(
            Message::verify_integrity(&raw, other),
            Err(IntegrityError::Mismatch)
        );
        true
    });
}
