//! STUN wire format: header and message types, the decoder and encoder, MESSAGE-INTEGRITY and
//! FINGERPRINT. Attributes live in `attr.rs`.

use std::fmt;
use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::attr::{
    attr_type as t, check_sha256_len, decode_attribute, encode_attribute, fixed, unknown, Attribute,
};
use crate::rng::Rng;

/// The magic cookie every RFC 5389/8489 message carries in bytes 4..8.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the fixed STUN header.
pub const HEADER_LEN: usize = 20;
/// Most attributes the decoder walks (ignored ones included) before it gives up.
pub const MAX_ATTRIBUTES: usize = 64;

const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// Message class (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request: expects a success or error response.
    Request,
    /// An indication: no response.
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

/// Message method. Only Binding is understood; anything else decodes as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Binding (0x001).
    Binding,
    /// Any other 12-bit method; bits above the low 12 are dropped when encoding.
    Other(u16),
}

impl Method {
    fn code(self) -> u16 {
        match self {
            Method::Binding => 0x001,
            Method::Other(m) => m & 0x0FFF,
        }
    }
}

/// 96-bit transaction id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(pub [u8; 12]);

impl TransactionId {
    /// A fresh id drawn from `rng` (seed it with real entropy where ids must be unguessable).
    pub fn random(rng: &mut Rng) -> Self {
        let mut id = [0; 12];
        rng.fill(&mut id);
        Self(id)
    }
}

impl fmt::Debug for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransactionId({self})")
    }
}

impl fmt::Display for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Why a datagram is not an acceptable STUN message. Every failure means "silently discard".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer than 20 bytes: no header.
    #[error("{len} bytes is shorter than the 20-byte STUN header")]
    TooShort {
        /// Datagram length.
        len: usize,
    },
    /// The first two bits are not `00` (RTP, DTLS or other traffic).
    #[error("first two bits are not 00")]
    NotStun,
    /// The magic cookie is wrong (or an RFC 3489 message).
    #[error("magic cookie mismatch")]
    BadMagicCookie,
    /// The header length is not a multiple of 4.
    #[error("header length {declared} is not a multiple of 4")]
    UnalignedLength {
        /// The length field.
        declared: u16,
    },
    /// `20 + length` differs from the datagram size.
    #[error("header length {declared} + 20 does not match the {actual}-byte datagram")]
    LengthMismatch {
        /// The length field.
        declared: u16,
        /// The datagram size.
        actual: usize,
    },
    /// An attribute header or value (with padding) runs past the end.
    #[error("attribute at offset {offset} runs past the end of the message")]
    TruncatedAttribute {
        /// Byte offset of the attribute header.
        offset: usize,
    },
    /// An attribute's length breaks its fixed/min/max length rule.
    #[error("attribute 0x{typ:04x} has invalid length {len}")]
    InvalidAttributeLength {
        /// Attribute type.
        typ: u16,
        /// Value length.
        len: usize,
    },
    /// An attribute's value is out of range (bad UTF-8, error class, ...).
    #[error("attribute 0x{typ:04x} has an invalid value")]
    InvalidAttributeValue {
        /// Attribute type.
        typ: u16,
    },
    /// More than [`MAX_ATTRIBUTES`] attributes.
    #[error("more than {max} attributes")]
    TooManyAttributes {
        /// The cap.
        max: usize,
    },
    /// FINGERPRINT is followed by another attribute.
    #[error("FINGERPRINT is not the last attribute")]
    FingerprintNotLast,
    /// FINGERPRINT does not match the CRC-32 of the message.
    #[error("FINGERPRINT does not match the message")]
    FingerprintMismatch,
}

/// Why [`Message::verify_integrity`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntegrityError {
    /// The bytes are not a well-formed STUN message.
    #[error("not a well-formed STUN message: {0}")]
    Malformed(#[from] DecodeError),
    /// The message carries no MESSAGE-INTEGRITY attribute.
    #[error("no MESSAGE-INTEGRITY attribute")]
    Missing,
    /// The HMAC does not match: wrong key or tampered message.
    #[error("MESSAGE-INTEGRITY does not match")]
    Mismatch,
}

/// A STUN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request, indication, success or error.
    pub class: Class,
    /// The method (Binding).
    pub method: Method,
    /// The transaction id.
    pub transaction_id: TransactionId,
    /// Attributes in wire order.
    pub attributes: Vec<Attribute>,
}

/// Extra attributes [`Message::encode_with`] computes and appends.
#[derive(Clone, Copy, Default)]
pub struct EncodeOptions<'a> {
    /// Append MESSAGE-INTEGRITY keyed with these bytes (see [`short_term_key`]).
    pub integrity_key: Option<&'a [u8]>,
    /// Append FINGERPRINT (after MESSAGE-INTEGRITY).
    pub fingerprint: bool,
}

impl fmt::Debug for EncodeOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodeOptions")
            .field("integrity_key", &self.integrity_key.map(|_| "<redacted>"))
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// The MESSAGE-INTEGRITY key for short-term credentials: the password bytes as given.
///
/// RFC 8489 asks for OpaqueString (RFC 5389: SASLprep) first; this crate does not implement it, so
/// non-ASCII passwords must be prepared by the caller. ICE passwords are ASCII, where it is a no-op.
/// Long-term credentials (key = MD5(username ":" realm ":" password)) are not provided: pipe-core
/// has no MD5. A caller holding the 16-byte key can still pass it to [`Message::verify_integrity`].
pub fn short_term_key(password: &str) -> Bytes {
    Bytes::copy_from_slice(password.as_bytes())
}

/// True if `bytes` has a valid STUN header: ≥ 20 bytes, top bits `00`, magic cookie, length a
/// multiple of 4 and equal to the datagram size minus 20. Use it to demultiplex a shared socket.
pub fn is_stun(bytes: &[u8]) -> bool {
    parse_header(bytes, false).is_ok()
}

/// The transaction id of something that looks like a STUN header (top bits, cookie), without
/// checking the length: works on a partial TCP frame.
pub fn peek_transaction_id(bytes: &[u8]) -> Option<TransactionId> {
    let header = bytes.get(..HEADER_LEN)?;
    check_start(header).ok()?;
    Some(TransactionId(header[8..20].try_into().ok()?))
}

/// For stream transports: the full size (header included) of the message whose header starts
/// `bytes`, or `None` if that is not a STUN header. Cap it against your frame limit before
/// buffering.
pub fn message_len(bytes: &[u8]) -> Option<usize> {
    let header = bytes.get(..HEADER_LEN)?;
    check_start(header).ok()?;
    let len = u16::from_be_bytes([header[2], header[3]]);
    (len % 4 == 0).then_some(HEADER_LEN + usize::from(len))
}

/// Decode one STUN message (a whole UDP datagram or TCP frame).
///
/// Enforces the header rules, a bounds-checked TLV walk, per-attribute length rules and the
/// [`MAX_ATTRIBUTES`] cap, and verifies FINGERPRINT (which must be last). Padding values are
/// ignored. Attributes after MESSAGE-INTEGRITY other than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT
/// are skipped, as are address attributes of unknown family. Unknown attributes are kept as
/// [`Attribute::Unknown`]; see [`Message::unknown_comprehension_required`].
pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
    decode_inner(buf, false).map(|(msg, _)| msg)
}

/// Decode one STUN message whatever its magic-cookie field holds, and return that field too:
/// [`MAGIC_COOKIE`] for an RFC 5389/8489 message, anything else for a classic RFC 3489 one
/// (whose 128-bit transaction id is the cookie field followed by
/// [`Message::transaction_id`]). Same checks as [`decode`] otherwise. Answer a classic request
/// with [`Message::encode_with_cookie`] and the same cookie (RFC 8489 §11).
pub fn decode_any_cookie(buf: &[u8]) -> Result<(Message, u32), DecodeError> {
    decode_inner(buf, true)
}

fn decode_inner(buf: &[u8], any_cookie: bool) -> Result<(Message, u32), DecodeError> {
    let (class, method, transaction_id) = parse_header(buf, any_cookie)?;
    let cookie = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let mut attributes = Vec::new();
    let mut after_integrity = false;
    let mut after_sha256 = false;
    for (count, tlv) in Tlvs::new(buf).enumerate() {
        if count >= MAX_ATTRIBUTES {
            return Err(DecodeError::TooManyAttributes {
                max: MAX_ATTRIBUTES,
            });
        }
        let tlv = tlv?;
        match tlv.typ {
            t::FINGERPRINT => {
                if tlv.next != buf.len() {
                    return Err(DecodeError::FingerprintNotLast);
                }
                let carried = u32::from_be_bytes(fixed(&tlv)?);
                if carried != fingerprint(&buf[..tlv.offset]) {
                    return Err(DecodeError::FingerprintMismatch);
                }
                attributes.push(Attribute::Fingerprint(carried));
            }
            t::MESSAGE_INTEGRITY_SHA256 if after_integrity && !after_sha256 => {
                check_sha256_len(&tlv)?;
                after_sha256 = true;
                attributes.push(unknown(&tlv));
            }
            _ if after_integrity => {}
            _ => {
                if let Some(attr) = decode_attribute(&tlv, &transaction_id)? {
                    attributes.push(attr);
                }
                after_integrity =
                    matches!(tlv.typ, t::MESSAGE_INTEGRITY | t::MESSAGE_INTEGRITY_SHA256);
                after_sha256 = tlv.typ == t::MESSAGE_INTEGRITY_SHA256;
            }
        }
    }
    Ok((
        Message {
            class,
            method,
            transaction_id,
            attributes,
        },
        cookie,
    ))
}

impl Message {
    /// An empty message.
    pub fn new(class: Class, method: Method, transaction_id: TransactionId) -> Self {
        Self {
            class,
            method,
            transaction_id,
            attributes: Vec::new(),
        }
    }

    /// An empty Binding request.
    pub fn binding_request(transaction_id: TransactionId) -> Self {
        Self::new(Class::Request, Method::Binding, transaction_id)
    }

    /// Decode `buf`; same as [`decode`].
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        decode(buf)
    }

    /// Encode the attributes in order, zero-padded. A [`Attribute::Fingerprint`] is recomputed
    /// over the bytes before it (keep it last); a [`Attribute::MessageIntegrity`] is written as
    /// stored (use [`Message::encode_with`] to compute one).
    ///
    /// # Panics
    /// If an attribute value or the whole attribute section exceeds 65,535 bytes (only possible
    /// with caller-built oversize values, never with a decoded message).
    pub fn encode(&self) -> Bytes {
        self.encode_with(&EncodeOptions::default())
    }

    /// Encode, then append a freshly computed MESSAGE-INTEGRITY and/or FINGERPRINT. When either
    /// option is on, MESSAGE-INTEGRITY and FINGERPRINT attributes already in `attributes` are
    /// left out (they would be stale or misplaced).
    ///
    /// # Panics
    /// As [`Message::encode`].
    pub fn encode_with(&self, opts: &EncodeOptions<'_>) -> Bytes {
        self.encode_with_cookie(opts, MAGIC_COOKIE)
    }

    /// As [`Message::encode_with`], with `cookie` in the magic-cookie field: the answer to a
    /// classic RFC 3489 request copies the request's field (see [`decode_any_cookie`]). XOR
    /// address attributes are still masked with [`MAGIC_COOKIE`], so leave them out of classic
    /// messages (use MAPPED-ADDRESS).
    ///
    /// # Panics
    /// As [`Message::encode`].
    pub fn encode_with_cookie(&self, opts: &EncodeOptions<'_>, cookie: u32) -> Bytes {
        let mut buf = BytesMut::with_capacity(HEADER_LEN + 32 * self.attributes.len());
        buf.put_u16(message_type(self.class, self.method));
        buf.put_u16(0);
        buf.put_u32(cookie);
        buf.put_slice(&self.transaction_id.0);
        let replace = opts.integrity_key.is_some() || opts.fingerprint;
        for attr in &self.attributes {
            match attr {
                Attribute::MessageIntegrity(_) | Attribute::Fingerprint(_) if replace => {}
                Attribute::Fingerprint(_) => append_fingerprint(&mut buf),
                _ => encode_attribute(attr, &self.transaction_id, &mut buf),
            }
        }
        if let Some(key) = opts.integrity_key {
            set_length(&mut buf, 24);
            let tag = hmac_sha1(key, &buf, buf.len()).finalize().into_bytes();
            let mi = Attribute::MessageIntegrity(tag.into());
            encode_attribute(&mi, &self.transaction_id, &mut buf);
        }
        if opts.fingerprint {
            append_fingerprint(&mut buf);
        }
        set_length(&mut buf, 0);
        buf.freeze()
    }

    /// Check the first MESSAGE-INTEGRITY of the raw message `raw` against `key`: HMAC-SHA1 over
    /// the bytes before it (padding as received), with the header length rewritten to end just
    /// after it; constant-time compare.
    pub fn verify_integrity(raw: &[u8], key: &[u8]) -> Result<(), IntegrityError> {
        parse_header(raw, false)?;
        for tlv in Tlvs::new(raw).take(MAX_ATTRIBUTES) {
            let tlv = tlv?;
            if tlv.typ == t::MESSAGE_INTEGRITY {
                let tag: [u8; 20] = fixed(&tlv)?;
                let mac = hmac_sha1(key, raw, tlv.offset);
                return mac.verify_slice(&tag).map_err(|_| IntegrityError::Mismatch);
            }
        }
        Err(IntegrityError::Missing)
    }

    /// XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS.
    pub fn mapped_address(&self) -> Option<SocketAddr> {
        self.find(|a| match a {
            Attribute::XorMappedAddress(addr) => Some(*addr),
            _ => None,
        })
        .or_else(|| {
            self.find(|a| match a {
                Attribute::MappedAddress(addr) => Some(*addr),
                _ => None,
            })
        })
    }

    /// OTHER-ADDRESS, if present.
    pub fn other_address(&self) -> Option<SocketAddr> {
        self.find(|a| match a {
            Attribute::OtherAddress(addr) => Some(*addr),
            _ => None,
        })
    }

    /// RESPONSE-ORIGIN, if present.
    pub fn response_origin(&self) -> Option<SocketAddr> {
        self.find(|a| match a {
            Attribute::ResponseOrigin(addr) => Some(*addr),
            _ => None,
        })
    }

    /// ERROR-CODE as `(code, reason)`, if present.
    pub fn error_code(&self) -> Option<(u16, &str)> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::ErrorCode { code, reason } => Some((*code, reason.as_str())),
            _ => None,
        })
    }

    /// True if the message carried FINGERPRINT.
    pub fn has_fingerprint(&self) -> bool {
        self.attributes
            .iter()
            .any(|a| matches!(a, Attribute::Fingerprint(_)))
    }

    /// Types of unknown comprehension-required attributes (0x0000..=0x7FFF), deduplicated, in
    /// wire order: a server answers a request carrying any with 420; a client fails the
    /// transaction.
    pub fn unknown_comprehension_required(&self) -> Vec<u16> {
        let mut out = Vec::new();
        for attr in &self.attributes {
            if let Attribute::Unknown { typ, .. } = attr {
                if *typ < 0x8000 && !out.contains(typ) {
                    out.push(*typ);
                }
            }
        }
        out
    }

    fn find<T>(&self, f: impl FnMut(&Attribute) -> Option<T>) -> Option<T> {
        self.attributes.iter().find_map(f)
    }
}

fn check_start(header: &[u8]) -> Result<(), DecodeError> {
    let [b0, _, _, _, c0, c1, c2, c3, ..] = *header else {
        return Err(DecodeError::TooShort { len: header.len() });
    };
    if b0 & 0xC0 != 0 {
        return Err(DecodeError::NotStun);
    }
    if u32::from_be_bytes([c0, c1, c2, c3]) != MAGIC_COOKIE {
        return Err(DecodeError::BadMagicCookie);
    }
    Ok(())
}

fn parse_header(
    buf: &[u8],
    any_cookie: bool,
) -> Result<(Class, Method, TransactionId), DecodeError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Err(DecodeError::TooShort { len: buf.len() });
    };
    match check_start(header) {
        Err(DecodeError::BadMagicCookie) if any_cookie => {}
        other => other?,
    }
    let typ = u16::from_be_bytes([header[0], header[1]]);
    let declared = u16::from_be_bytes([header[2], header[3]]);
    if declared % 4 != 0 {
        return Err(DecodeError::UnalignedLength { declared });
    }
    if HEADER_LEN + usize::from(declared) != buf.len() {
        return Err(DecodeError::LengthMismatch {
            declared,
            actual: buf.len(),
        });
    }
    let class = match ((typ >> 7) & 0b10) | ((typ >> 4) & 0b1) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    let method = match (typ & 0x000F) | ((typ & 0x00E0) >> 1) | ((typ & 0x3E00) >> 2) {
        0x001 => Method::Binding,
        m => Method::Other(m),
    };
    let mut id = [0; 12];
    id.copy_from_slice(&header[8..20]);
    Ok((class, method, TransactionId(id)))
}

fn message_type(class: Class, method: Method) -> u16 {
    let m = method.code();
    let c: u16 = match class {
        Class::Request => 0,
        Class::Indication => 1,
        Class::Success => 2,
        Class::Error => 3,
    };
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

pub(super) struct Tlv<'a> {
    pub(super) offset: usize,
    pub(super) next: usize,
    pub(super) typ: u16,
    pub(super) value: &'a [u8],
}

/// Walks the attribute section with checked bounds; stops after the first error.
struct Tlvs<'a> {
    buf: &'a [u8],
    offset: usize,
}

impl<'a> Tlvs<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            offset: HEADER_LEN,
        }
    }
}

impl<'a> Iterator for Tlvs<'a> {
    type Item = Result<Tlv<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let offset = self.offset;
        let rest = self.buf.get(offset..).filter(|r| !r.is_empty())?;
        let truncated = DecodeError::TruncatedAttribute { offset };
        let parsed = (|| {
            let [t0, t1, l0, l1, ..] = *rest else {
                return None;
            };
            let len = usize::from(u16::from_be_bytes([l0, l1]));
            let padded = len.checked_add(3)? & !3;
            let value = rest.get(4..4usize.checked_add(len)?)?;
            rest.get(..4usize.checked_add(padded)?)?;
            let next = offset.checked_add(4)?.checked_add(padded)?;
            Some(Tlv {
                offset,
                next,
                typ: u16::from_be_bytes([t0, t1]),
                value,
            })
        })();
        match parsed {
            Some(tlv) => {
                self.offset = tlv.next;
                Some(Ok(tlv))
            }
            None => {
                self.offset = self.buf.len();
                Some(Err(truncated))
            }
        }
    }
}

/// Write the header length as if `extra` more bytes followed what `buf` holds.
fn set_length(buf: &mut BytesMut, extra: usize) {
    let len = buf.len() - HEADER_LEN + extra;
    let len16 = u16::try_from(len).expect("STUN message longer than 65,535 bytes");
    buf[2..4].copy_from_slice(&len16.to_be_bytes());
}

/// HMAC-SHA1 over `raw[..mi_offset]` with the length field rewritten to end after a 24-byte
/// MESSAGE-INTEGRITY at `mi_offset`.
fn hmac_sha1(key: &[u8], raw: &[u8], mi_offset: usize) -> Hmac<Sha1> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    let len = (mi_offset + 24 - HEADER_LEN) as u16;
    mac.update(&raw[..2]);
    mac.update(&len.to_be_bytes());
    mac.update(&raw[4..mi_offset]);
    mac
}

fn append_fingerprint(buf: &mut BytesMut) {
    set_length(buf, 8);
    let crc = fingerprint(buf);
    buf.put_u16(t::FINGERPRINT);
    buf.put_u16(4);
    buf.put_u32(crc);
}

fn fingerprint(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes) ^ FINGERPRINT_XOR
}
