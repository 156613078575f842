//! STUN attributes: type codes, the [`Attribute`] enum and the per-attribute length rules
//! (RFC 8489 §14, RFC 5780 §7, RFC 8445 §16.1).

use std::net::{IpAddr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{DecodeError, Tlv, TransactionId, MAGIC_COOKIE};

const MAX_TEXT_BYTES: usize = 763;
const MAX_TEXT_CHARS: usize = 127;
const MAX_USERNAME_BYTES: usize = 512;

/// Attribute type codes (RFC 8489 §18.3, RFC 5780 §7, RFC 8445 §16.1).
pub mod attr_type {
    /// MAPPED-ADDRESS.
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// RESPONSE-ADDRESS (RFC 3489; never honoured: it would make the server a reflector).
    pub const RESPONSE_ADDRESS: u16 = 0x0002;
    /// CHANGE-REQUEST (RFC 5780).
    pub const CHANGE_REQUEST: u16 = 0x0003;
    /// SOURCE-ADDRESS (RFC 3489): where the response was sent from.
    pub const SOURCE_ADDRESS: u16 = 0x0004;
    /// CHANGED-ADDRESS (RFC 3489): the server's other address and port.
    pub const CHANGED_ADDRESS: u16 = 0x0005;
    /// USERNAME.
    pub const USERNAME: u16 = 0x0006;
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// ERROR-CODE.
    pub const ERROR_CODE: u16 = 0x0009;
    /// UNKNOWN-ATTRIBUTES.
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// REALM.
    pub const REALM: u16 = 0x0014;
    /// NONCE.
    pub const NONCE: u16 = 0x0015;
    /// MESSAGE-INTEGRITY-SHA256 (length-checked, kept as [`Attribute::Unknown`](super::Attribute)).
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    /// XOR-MAPPED-ADDRESS.
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// PRIORITY (ICE).
    pub const PRIORITY: u16 = 0x0024;
    /// PADDING (RFC 5780): ignored by the server; makes a request big enough for its answer.
    pub const PADDING: u16 = 0x0026;
    /// RESPONSE-PORT (RFC 5780).
    pub const RESPONSE_PORT: u16 = 0x0027;
    /// SOFTWARE.
    pub const SOFTWARE: u16 = 0x8022;
    /// FINGERPRINT.
    pub const FINGERPRINT: u16 = 0x8028;
    /// ICE-CONTROLLED.
    pub const ICE_CONTROLLED: u16 = 0x8029;
    /// ICE-CONTROLLING.
    pub const ICE_CONTROLLING: u16 = 0x802A;
    /// RESPONSE-ORIGIN (RFC 5780).
    pub const RESPONSE_ORIGIN: u16 = 0x802B;
    /// OTHER-ADDRESS (RFC 5780).
    pub const OTHER_ADDRESS: u16 = 0x802C;
}
use attr_type as t;

/// A decoded attribute. Text values are UTF-8 checked; addresses are plain `SocketAddr`s
/// (XOR already undone).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attribute {
    /// MAPPED-ADDRESS.
    MappedAddress(SocketAddr),
    /// XOR-MAPPED-ADDRESS.
    XorMappedAddress(SocketAddr),
    /// USERNAME (< 513 bytes).
    Username(String),
    /// MESSAGE-INTEGRITY as carried; see [`Message::verify_integrity`](super::Message::verify_integrity).
    MessageIntegrity([u8; 20]),
    /// ERROR-CODE: `code` is 300..=699 (class × 100 + number).
    ErrorCode {
        /// The numeric code, e.g. 420.
        code: u16,
        /// The reason phrase (may be empty).
        reason: String,
    },
    /// UNKNOWN-ATTRIBUTES: the types the peer did not understand.
    UnknownAttributes(Vec<u16>),
    /// REALM.
    Realm(String),
    /// NONCE.
    Nonce(String),
    /// SOFTWARE.
    Software(String),
    /// FINGERPRINT as carried (the decoder has already verified it).
    Fingerprint(u32),
    /// PRIORITY (ICE).
    Priority(u32),
    /// ICE-CONTROLLED tie-breaker.
    IceControlled(u64),
    /// ICE-CONTROLLING tie-breaker.
    IceControlling(u64),
    /// CHANGE-REQUEST (RFC 5780); other flag bits are dropped.
    ChangeRequest {
        /// Ask the server to answer from its other IP.
        change_ip: bool,
        /// Ask the server to answer from its other port.
        change_port: bool,
    },
    /// RESPONSE-ORIGIN (RFC 5780).
    ResponseOrigin(SocketAddr),
    /// OTHER-ADDRESS (RFC 5780).
    OtherAddress(SocketAddr),
    /// SOURCE-ADDRESS (RFC 3489).
    SourceAddress(SocketAddr),
    /// CHANGED-ADDRESS (RFC 3489).
    ChangedAddress(SocketAddr),
    /// RESPONSE-PORT (RFC 5780): answer to this port of the source's IP.
    ResponsePort(u16),
    /// Any other attribute, value without padding.
    Unknown {
        /// The attribute type.
        typ: u16,
        /// The value, without padding.
        value: Bytes,
    },
}

impl Attribute {
    /// The wire type code of this attribute.
    pub fn typ(&self) -> u16 {
        match self {
            Attribute::MappedAddress(_) => t::MAPPED_ADDRESS,
            Attribute::XorMappedAddress(_) => t::XOR_MAPPED_ADDRESS,
            Attribute::Username(_) => t::USERNAME,
            Attribute::MessageIntegrity(_) => t::MESSAGE_INTEGRITY,
            Attribute::ErrorCode { .. } => t::ERROR_CODE,
            Attribute::UnknownAttributes(_) => t::UNKNOWN_ATTRIBUTES,
            Attribute::Realm(_) => t::REALM,
            Attribute::Nonce(_) => t::NONCE,
            Attribute::Software(_) => t::SOFTWARE,
            Attribute::Fingerprint(_) => t::FINGERPRINT,
            Attribute::Priority(_) => t::PRIORITY,
            Attribute::IceControlled(_) => t::ICE_CONTROLLED,
            Attribute::IceControlling(_) => t::ICE_CONTROLLING,
            Attribute::ChangeRequest { .. } => t::CHANGE_REQUEST,
            Attribute::ResponseOrigin(_) => t::RESPONSE_ORIGIN,
            Attribute::OtherAddress(_) => t::OTHER_ADDRESS,
            Attribute::SourceAddress(_) => t::SOURCE_ADDRESS,
            Attribute::ChangedAddress(_) => t::CHANGED_ADDRESS,
            Attribute::ResponsePort(_) => t::RESPONSE_PORT,
            Attribute::Unknown { typ, .. } => *typ,
        }
    }
}

pub(super) fn bad_len(tlv: &Tlv<'_>) -> DecodeError {
    DecodeError::InvalidAttributeLength {
        typ: tlv.typ,
        len: tlv.value.len(),
    }
}

pub(super) fn fixed<const N: usize>(tlv: &Tlv<'_>) -> Result<[u8; N], DecodeError> {
    tlv.value.try_into().map_err(|_| bad_len(tlv))
}

pub(super) fn check_sha256_len(tlv: &Tlv<'_>) -> Result<(), DecodeError> {
    let len = tlv.value.len();
    if (16..=32).contains(&len) && len % 4 == 0 {
        Ok(())
    } else {
        Err(bad_len(tlv))
    }
}

pub(super) fn unknown(tlv: &Tlv<'_>) -> Attribute {
    Attribute::Unknown {
        typ: tlv.typ,
        value: Bytes::copy_from_slice(tlv.value),
    }
}

fn text(tlv: &Tlv<'_>, max_bytes: usize, max_chars: usize) -> Result<String, DecodeError> {
    text_bytes(tlv, tlv.value, max_bytes, max_chars)
}

fn text_bytes(
    tlv: &Tlv<'_>,
    v: &[u8],
    max_bytes: usize,
    max_chars: usize,
) -> Result<String, DecodeError> {
    if v.len() > max_bytes {
        return Err(bad_len(tlv));
    }
    let s =
        std::str::from_utf8(v).map_err(|_| DecodeError::InvalidAttributeValue { typ: tlv.typ })?;
    if s.chars().count() > max_chars {
        return Err(bad_len(tlv));
    }
    Ok(s.to_owned())
}

pub(super) fn decode_attribute(
    tlv: &Tlv<'_>,
    id: &TransactionId,
) -> Result<Option<Attribute>, DecodeError> {
    let v = tlv.value;
    let attr = match tlv.typ {
        t::MAPPED_ADDRESS => decode_address(tlv, None)?.map(Attribute::MappedAddress),
        t::XOR_MAPPED_ADDRESS => decode_address(tlv, Some(id))?.map(Attribute::XorMappedAddress),
        t::RESPONSE_ORIGIN => decode_address(tlv, None)?.map(Attribute::ResponseOrigin),
        t::OTHER_ADDRESS => decode_address(tlv, None)?.map(Attribute::OtherAddress),
        t::SOURCE_ADDRESS => decode_address(tlv, None)?.map(Attribute::SourceAddress),
        t::CHANGED_ADDRESS => decode_address(tlv, None)?.map(Attribute::ChangedAddress),
        t::RESPONSE_PORT => {
            let [p0, p1, _, _] = fixed(tlv)?;
            Some(Attribute::ResponsePort(u16::from_be_bytes([p0, p1])))
        }
        t::USERNAME => Some(Attribute::Username(text(
            tlv,
            MAX_USERNAME_BYTES,
            usize::MAX,
        )?)),
        t::SOFTWARE => Some(Attribute::Software(text(
            tlv,
            MAX_TEXT_BYTES,
            MAX_TEXT_CHARS,
        )?)),
        t::REALM => Some(Attribute::Realm(text(tlv, MAX_TEXT_BYTES, MAX_TEXT_CHARS)?)),
        t::NONCE => Some(Attribute::Nonce(text(tlv, MAX_TEXT_BYTES, MAX_TEXT_CHARS)?)),
        t::MESSAGE_INTEGRITY => Some(Attribute::MessageIntegrity(fixed(tlv)?)),
        t::PRIORITY => Some(Attribute::Priority(u32::from_be_bytes(fixed(tlv)?))),
        t::ICE_CONTROLLED => Some(Attribute::IceControlled(u64::from_be_bytes(fixed(tlv)?))),
        t::ICE_CONTROLLING => Some(Attribute::IceControlling(u64::from_be_bytes(fixed(tlv)?))),
        t::CHANGE_REQUEST => {
            let flags = u32::from_be_bytes(fixed(tlv)?);
            Some(Attribute::ChangeRequest {
                change_ip: flags & 4 != 0,
                change_port: flags & 2 != 0,
            })
        }
        t::ERROR_CODE => {
            let [_, _, class, number, ref reason @ ..] = *v else {
                return Err(bad_len(tlv));
            };
            let class = class & 0x07;
            if !(3..=6).contains(&class) || number > 99 {
                return Err(DecodeError::InvalidAttributeValue { typ: tlv.typ });
            }
            let reason = text_bytes(tlv, reason, MAX_TEXT_BYTES, MAX_TEXT_CHARS)?;
            Some(Attribute::ErrorCode {
                code: u16::from(class) * 100 + u16::from(number),
                reason,
            })
        }
        t::UNKNOWN_ATTRIBUTES => {
            if v.len() % 2 != 0 {
                return Err(bad_len(tlv));
            }
            let types = v
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            Some(Attribute::UnknownAttributes(types))
        }
        t::MESSAGE_INTEGRITY_SHA256 => {
            check_sha256_len(tlv)?;
            Some(unknown(tlv))
        }
        _ => Some(unknown(tlv)),
    };
    Ok(attr)
}

/// XOR-MAPPED-ADDRESS masks: port ⊕ 0x2112, address ⊕ (magic cookie ‖ transaction id).
fn xor_mask(xor: Option<&TransactionId>) -> (u16, [u8; 16]) {
    let mut mask = [0u8; 16];
    let Some(id) = xor else { return (0, mask) };
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(&id.0);
    ((MAGIC_COOKIE >> 16) as u16, mask)
}

/// `Ok(None)` for an unknown address family: the attribute is ignored (RFC 8489 §14.1).
fn decode_address(
    tlv: &Tlv<'_>,
    xor: Option<&TransactionId>,
) -> Result<Option<SocketAddr>, DecodeError> {
    let [_, family, p0, p1, ref addr @ ..] = *tlv.value else {
        return Err(bad_len(tlv));
    };
    let (port_mask, mask) = xor_mask(xor);
    let mut octets = [0u8; 16];
    for ((o, a), m) in octets.iter_mut().zip(addr).zip(mask) {
        *o = a ^ m;
    }
    let ip = match (family, addr.len()) {
        (1, 4) => IpAddr::from([octets[0], octets[1], octets[2], octets[3]]),
        (2, 16) => IpAddr::from(octets),
        (1 | 2, _) => return Err(bad_len(tlv)),
        _ => return Ok(None),
    };
    Ok(Some(SocketAddr::new(
        ip,
        u16::from_be_bytes([p0, p1]) ^ port_mask,
    )))
}

fn encode_address(addr: &SocketAddr, xor: Option<&TransactionId>, buf: &mut BytesMut) {
    let (port_mask, mask) = xor_mask(xor);
    let put = |buf: &mut BytesMut, family: u8, octets: &[u8]| {
        buf.put_u8(0);
        buf.put_u8(family);
        buf.put_u16(addr.port() ^ port_mask);
        octets.iter().zip(mask).for_each(|(o, m)| buf.put_u8(o ^ m));
    };
    match addr.ip() {
        IpAddr::V4(ip) => put(buf, 1, &ip.octets()),
        IpAddr::V6(ip) => put(buf, 2, &ip.octets()),
    }
}

pub(super) fn encode_attribute(attr: &Attribute, id: &TransactionId, buf: &mut BytesMut) {
    let start = buf.len();
    buf.put_u16(attr.typ());
    buf.put_u16(0);
    match attr {
        Attribute::MappedAddress(a)
        | Attribute::ResponseOrigin(a)
        | Attribute::OtherAddress(a)
        | Attribute::SourceAddress(a)
        | Attribute::ChangedAddress(a) => encode_address(a, None, buf),
        Attribute::ResponsePort(p) => {
            buf.put_u16(*p);
            buf.put_u16(0);
        }
        Attribute::XorMappedAddress(a) => encode_address(a, Some(id), buf),
        Attribute::Username(s)
        | Attribute::Realm(s)
        | Attribute::Nonce(s)
        | Attribute::Software(s) => buf.put_slice(s.as_bytes()),
        Attribute::MessageIntegrity(tag) => buf.put_slice(tag),
        Attribute::ErrorCode { code, reason } => {
            buf.put_u16(0);
            buf.put_u8(((code / 100) & 0x07) as u8);
            buf.put_u8((code % 100) as u8);
            buf.put_slice(reason.as_bytes());
        }
        Attribute::UnknownAttributes(types) => types.iter().for_each(|t| buf.put_u16(*t)),
        Attribute::Fingerprint(v) | Attribute::Priority(v) => buf.put_u32(*v),
        Attribute::IceControlled(v) | Attribute::IceControlling(v) => buf.put_u64(*v),
        Attribute::ChangeRequest {
            change_ip,
            change_port,
        } => buf.put_u32(u32::from(*change_ip) << 2 | u32::from(*change_port) << 1),
        Attribute::Unknown { value, .. } => buf.put_slice(value),
    }
    let len = buf.len() - start - 4;
    let len16 = u16::try_from(len).expect("STUN attribute value longer than 65,535 bytes");
    buf[start + 2..start + 4].copy_from_slice(&len16.to_be_bytes());
    buf.put_bytes(0, (4 - len % 4) % 4);
}
