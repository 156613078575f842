//! The TCP byte path: stream bytes → session layer → framing → messages.
//!
//! The session layer sits between socket bytes and framing: [`Session::Plain`] passes bytes
//! through; [`Session::Tls`] is rustls driven in memory by the engine (`crate::tls`). Framing
//! then cuts the plaintext into messages, checking limits before buffering anything for a
//! frame.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::conf::Framing;
use crate::error::SendError;

/// The layer between socket bytes and framing.
#[derive(Debug, Default)]
pub(crate) enum Session {
    /// No transformation.
    #[default]
    Plain,
    /// TLS (the engine drives it: see `crate::tls`).
    Tls(Box<crate::tls::TlsSession>),
}

impl Session {
    /// The TLS session, if any.
    pub(crate) fn tls(&mut self) -> Option<&mut crate::tls::TlsSession> {
        match self {
            Session::Tls(t) => Some(t),
            Session::Plain => None,
        }
    }

    /// A TLS session still in its handshake.
    pub(crate) fn handshaking(&self) -> bool {
        matches!(self, Session::Tls(t) if t.is_handshaking())
    }

    /// Plaintext a TLS session took during its handshake and still holds (counted as queued
    /// output).
    pub(crate) fn early(&self) -> usize {
        match self {
            Session::Tls(t) => t.early(),
            Session::Plain => 0,
        }
    }

    /// True when bytes pass through unchanged.
    pub(crate) fn is_plain(&self) -> bool {
        matches!(self, Session::Plain)
    }

    /// Turn framed plaintext into socket bytes (empty while TLS buffers it for the end of
    /// its handshake).
    pub(crate) fn outbound(&mut self, bytes: Bytes) -> Result<Bytes, crate::error::SendError> {
        match self {
            Session::Plain => Ok(bytes),
            Session::Tls(_) => self.outbound_slice(&bytes),
        }
    }

    /// Like `outbound`, from the caller's buffer: TLS encrypts straight from it (no copy into
    /// a framing buffer first).
    pub(crate) fn outbound_slice(&mut self, data: &[u8]) -> Result<Bytes, crate::error::SendError> {
        match self {
            Session::Plain => Ok(Bytes::copy_from_slice(data)),
            Session::Tls(t) => {
                if !t.write_plain(data) {
                    return Err(crate::error::SendError::WouldBlock);
                }
                Ok(t.take_outgoing_sized(data.len()).unwrap_or_default())
            }
        }
    }
}

/// Framing failed: the connection must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLarge {
    pub(crate) len: usize,
    pub(crate) max: usize,
}

/// Cuts plaintext into messages.
#[derive(Debug)]
pub(crate) struct Deframer {
    framing: Framing,
    buf: BytesMut,
    /// For `Delimited`: bytes of `buf` already searched for a delimiter.
    searched: usize,
}

impl Deframer {
    pub(crate) fn new(framing: Framing) -> Self {
        Self {
            framing,
            buf: BytesMut::new(),
            searched: 0,
        }
    }

    /// Bytes held for an incomplete frame.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The most this deframer will ever buffer.
    pub(crate) fn max_buffered(&self) -> usize {
        match &self.framing {
            Framing::Raw => 0,
            Framing::LengthPrefixed { max } => 4 + max,
            Framing::Delimited { delim, max } => max + delim.len(),
        }
    }

    /// Feed `input`, calling `emit` for each complete message in order.
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        emit: &mut dyn FnMut(Bytes),
    ) -> Result<(), TooLarge> {
        match self.framing.clone() {
            Framing::Raw => {
                if !input.is_empty() {
                    emit(Bytes::copy_from_slice(input));
                }
                Ok(())
            }
            Framing::LengthPrefixed { max } => self.feed_prefixed(input, max, emit),
            Framing::Delimited { delim, max } => self.feed_delimited(input, &delim, max, emit),
        }
    }

    fn feed_prefixed(
        &mut self,
        mut input: &[u8],
        max: usize,
        emit: &mut dyn FnMut(Bytes),
    ) -> Result<(), TooLarge> {
        loop {
            // Fast path: whole frames straight from the input, no buffering.
            if self.buf.is_empty() {
                let Some(header) = input.get(..4) else { break };
                let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
                if len > max {
                    return Err(TooLarge { len, max });
                }
                let Some(body) = input.get(4..4 + len) else {
                    break;
                };
                emit(Bytes::copy_from_slice(body));
                input = &input[4 + len..];
                continue;
            }
            // Slow path: complete the buffered frame.
            if self.buf.len() < 4 {
                let need = 4 - self.buf.len();
                let take = need.min(input.len());
                self.buf.put_slice(&input[..take]);
                input = &input[take..];
                if self.buf.len() < 4 {
                    return Ok(());
                }
            }
            let len =
                u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
            if len > max {
                return Err(TooLarge { len, max });
            }
            let need = 4 + len - self.buf.len();
            let take = need.min(input.len());
            self.buf.put_slice(&input[..take]);
            input = &input[take..];
            if self.buf.len() < 4 + len {
                return Ok(());
            }
            self.buf.advance(4);
            emit(self.buf.split().freeze());
        }
        if !input.is_empty() {
            // A partial header or body: check the declared length before keeping anything.
            if let Some(h) = input.get(..4) {
                let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
                if len > max {
                    return Err(TooLarge { len, max });
                }
            }
            self.buf.put_slice(input);
        }
        Ok(())
    }

    fn feed_delimited(
        &mut self,
        input: &[u8],
        delim: &[u8],
        max: usize,
        emit: &mut dyn FnMut(Bytes),
    ) -> Result<(), TooLarge> {
        let mut input = input;
        loop {
            if self.buf.is_empty() {
                // Fast path: frames straight from the input.
                match find(input, delim) {
                    Some(i) => {
                        if i > max {
                            return Err(TooLarge { len: i, max });
                        }
                        emit(Bytes::copy_from_slice(&input[..i]));
                        input = &input[i + delim.len()..];
                        continue;
                    }
                    None => {
                        if input.len() > max + delim.len() - 1 {
                            return Err(TooLarge {
                                len: input.len(),
                                max,
                            });
                        }
                        self.buf.put_slice(input);
                        self.searched = 0;
                        return Ok(());
                    }
                }
            }
            // Append only as much as can still complete a frame, then search.
            let room = (max + delim.len()).saturating_sub(self.buf.len());
            let take = room.min(input.len());
            self.buf.put_slice(&input[..take]);
            input = &input[take..];
            let start = self.searched.saturating_sub(delim.len() - 1);
            match find(&self.buf[start..], delim) {
                Some(i) => {
                    let end = start + i;
                    if end > max {
                        return Err(TooLarge { len: end, max });
                    }
                    let mut frame = self.buf.split_to(end + delim.len());
                    frame.truncate(end);
                    emit(frame.freeze());
                    self.searched = 0;
                    // Put back what the frame did not use and continue on the fast path.
                    if !self.buf.is_empty() {
                        let rest = self.buf.split().freeze();
                        self.feed_delimited(&rest, delim, max, emit)?;
                    }
                }
                None => {
                    self.searched = self.buf.len();
                    if self.buf.len() > max + delim.len() - 1 {
                        return Err(TooLarge {
                            len: self.buf.len(),
                            max,
                        });
                    }
                    if input.is_empty() {
                        return Ok(());
                    }
                }
            }
            if input.is_empty() {
                return Ok(());
            }
        }
    }

    /// Frame one outgoing message.
    pub(crate) fn frame(&self, payload: &[u8]) -> Result<Bytes, SendError> {
        match &self.framing {
            Framing::Raw => Ok(Bytes::copy_from_slice(payload)),
            Framing::LengthPrefixed { max } => {
                if payload.len() > *max {
                    return Err(SendError::TooLarge {
                        len: payload.len(),
                        max: *max,
                    });
                }
                let mut b = BytesMut::with_capacity(4 + payload.len());
                b.put_u32(payload.len() as u32);
                b.put_slice(payload);
                Ok(b.freeze())
            }
            Framing::Delimited { delim, max } => {
                if payload.len() > *max {
                    return Err(SendError::TooLarge {
                        len: payload.len(),
                        max: *max,
                    });
                }
                if find(payload, delim).is_some() {
                    return Err(SendError::ContainsDelimiter);
                }
                let mut b = BytesMut::with_capacity(payload.len() + delim.len());
                b.put_slice(payload);
                b.put_slice(delim);
                Ok(b.freeze())
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    match needle {
        [b] => hay.iter().position(|x| x == b),
        _ => hay.windows(needle.len()).position(|w| w == needle),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Just;

    fn run(framing: Framing, chunks: &[&[u8]]) -> Result<Vec<Vec<u8>>, TooLarge> {
        let mut d = Deframer::new(framing);
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut |b| out.push(b.to_vec()))?;
            assert!(d.buffered() <= d.max_buffered());
        }
        Ok(out)
    }

    #[test]
    fn length_prefixed_any_split() {
        let f = Framing::LengthPrefixed { max: 10 };
        let d = Deframer::new(f.clone());
        let mut wire = Vec::new();
        for m in [&b"hello"[..], b"", b"0123456789"] {
            wire.extend_from_slice(&d.frame(m).unwrap());
        }
        for split in 1..wire.len() {
            let chunks: Vec<&[u8]> = wire.chunks(split).collect();
            assert_eq!(
                run(f.clone(), &chunks).unwrap(),
                vec![b"hello".to_vec(), vec![], b"0123456789".to_vec()]
            );
        }
    }

    #[test]
    fn length_prefixed_rejects_declared_length_before_buffering() {
        let f = Framing::LengthPrefixed { max: 10 };
        assert_eq!(
            run(f.clone(), &[&[0xff, 0xff, 0xff, 0xff]]),
            Err(TooLarge {
                len: u32::MAX as usize,
                max: 10
            })
        );
        assert_eq!(
            run(f, &[&[0, 0], &[0, 11]]),
            Err(TooLarge { len: 11, max: 10 })
        );
    }

    #[test]
    fn delimited_any_split_and_limit() {
        let f = Framing::Delimited {
            delim: Bytes::from_static(b"\r\n"),
            max: 5,
        };
        let wire = b"ab\r\n\r\nhello\r\n";
        for split in 1..wire.len() {
            let chunks: Vec<&[u8]> = wire.chunks(split).collect();
            assert_eq!(
                run(f.clone(), &chunks).unwrap(),
                vec![b"ab".to_vec(), vec![], b"hello".to_vec()]
            );
        }
        assert!(run(f.clone(), &[b"toolong"]).is_err());
        // "abcdef" may still end in "\r" + "\n" only if byte 6 were "\r": the limit bites at 7.
        assert!(run(f.clone(), &[b"abc", b"def"]).is_ok());
        assert!(run(f, &[b"abc", b"defg"]).is_err());
    }

    fn crlf(max: usize) -> Framing {
        Framing::Delimited {
            delim: Bytes::from_static(b"\r\n"),
            max,
        }
    }

    /// One read completes the buffered frame and carries another whole frame: both come out,
    /// in order, and nothing stays buffered.
    #[test]
    fn delimited_read_that_completes_a_frame_and_carries_another() {
        for max in [1, 2, 5, 64] {
            assert_eq!(
                run(crlf(max), &[b"a", b"\r\nb\r\n"]).unwrap(),
                vec![b"a".to_vec(), b"b".to_vec()],
                "max {max}"
            );
            let mut d = Deframer::new(crlf(max));
            let mut out = Vec::new();
            d.feed(b"a", &mut |b| out.push(b.to_vec())).unwrap();
            d.feed(b"\r\nb\r\nc", &mut |b| out.push(b.to_vec()))
                .unwrap();
            assert_eq!(out, vec![b"a".to_vec(), b"b".to_vec()], "max {max}");
            assert_eq!(d.buffered(), 1, "only the partial \"c\" stays, max {max}");
        }
    }

    /// Every way to cut `wire` into two reads (and the whole of it in one).
    fn two_reads(wire: &[u8]) -> Vec<[&[u8]; 2]> {
        (0..=wire.len()).map(|i| [&wire[..i], &wire[i..]]).collect()
    }

    #[test]
    fn length_prefixed_exact_limit() {
        for max in [1, 5, 300] {
            let f = Framing::LengthPrefixed { max };
            let ok = vec![b'x'; max];
            let mut wire = (max as u32).to_be_bytes().to_vec();
            wire.extend_from_slice(&ok);
            for reads in two_reads(&wire) {
                assert_eq!(run(f.clone(), &reads), Ok(vec![ok.clone()]), "max {max}");
            }
            // max + 1 is refused as soon as the header is complete, before the body arrives.
            let mut wire = (max as u32 + 1).to_be_bytes().to_vec();
            wire.extend_from_slice(&vec![b'x'; max + 1]);
            for reads in two_reads(&wire) {
                assert_eq!(
                    run(f.clone(), &reads),
                    Err(TooLarge { len: max + 1, max }),
                    "max {max}, reads of {} + {}",
                    reads[0].len(),
                    reads[1].len()
                );
                let header_only = [&wire[..4]];
                assert_eq!(
                    run(f.clone(), &header_only),
                    Err(TooLarge { len: max + 1, max })
                );
            }
            // The framer refuses the same sizes.
            let d = Deframer::new(f.clone());
            assert!(d.frame(&ok).is_ok());
            assert_eq!(
                d.frame(&vec![b'x'; max + 1]),
                Err(SendError::TooLarge { len: max + 1, max })
            );
        }
    }

    #[test]
    fn delimited_exact_limit_with_the_delimiter_split_across_reads() {
        for (delim, max) in [(&b"\n"[..], 1), (b"\r\n", 5), (b"\r\n", 300), (b"<END>", 7)] {
            let f = Framing::Delimited {
                delim: Bytes::copy_from_slice(delim),
                max,
            };
            let ok = vec![b'x'; max];
            let wire = [&ok[..], delim].concat();
            // Every cut, including every cut inside the delimiter.
            for reads in two_reads(&wire) {
                assert_eq!(run(f.clone(), &reads), Ok(vec![ok.clone()]), "max {max}");
            }
            // The same frame followed by others in the same reads: one of max, one shorter.
            let short = b"y".to_vec();
            let more = [&wire[..], &wire[..], &short[..], delim].concat();
            for reads in two_reads(&more) {
                assert_eq!(
                    run(f.clone(), &reads),
                    Ok(vec![ok.clone(), ok.clone(), short.clone()]),
                    "max {max}"
                );
            }
            let long = vec![b'x'; max + 1];
            let wire = [&long[..], delim].concat();
            for reads in two_reads(&wire) {
                assert!(
                    run(f.clone(), &reads).is_err(),
                    "max {max}: a frame of max + 1 was accepted, reads of {} + {}",
                    reads[0].len(),
                    reads[1].len()
                );
            }
            let d = Deframer::new(f.clone());
            assert!(d.frame(&ok).is_ok());
            assert_eq!(
                d.frame(&long),
                Err(SendError::TooLarge { len: max + 1, max })
            );
        }
    }

    /// What `Delimited` must yield for a byte stream, however it is split: the frames before
    /// each delimiter, in order, or `TooLarge` once a frame (or an unfinished tail) passes `max`.
    fn delimited_reference(wire: &[u8], delim: &[u8], max: usize) -> (Vec<Vec<u8>>, bool) {
        let mut out = Vec::new();
        let mut rest = wire;
        while let Some(i) = find(rest, delim) {
            if i > max {
                return (out, false);
            }
            out.push(rest[..i].to_vec());
            rest = &rest[i + delim.len()..];
        }
        (out, rest.len() < max + delim.len())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]
        #[test]
        fn delimited_matches_reference_for_any_split(
            // Mostly well-formed frames (the bytes may still hold the delimiter, or run long),
            // then an optional unfinished tail.
            frames in proptest::collection::vec(
                proptest::collection::vec(proptest::prop_oneof![Just(b'a'), Just(b'b'), Just(b'\r'), Just(b'\n')], 0..8),
                0..6,
            ),
            tail in proptest::collection::vec(proptest::prop_oneof![Just(b'a'), Just(b'\r')], 0..4),
            cuts in proptest::collection::vec(0usize..60, 0..6),
            delim in proptest::prop_oneof![Just(&b"\r\n"[..]), Just(&b"\n"[..]), Just(&b"aab"[..]), Just(&b"abab"[..])],
            max in 1usize..8,
        ) {
            let mut wire = Vec::new();
            for f in &frames {
                wire.extend_from_slice(f);
                wire.extend_from_slice(delim);
            }
            wire.extend_from_slice(&tail);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(wire.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([wire.len()]) {
                chunks.push(&wire[at..c]);
                at = c;
            }
            let f = Framing::Delimited { delim: Bytes::copy_from_slice(delim), max };
            let mut d = Deframer::new(f);
            let mut out = Vec::new();
            let mut ok = true;
            for c in &chunks {
                if d.feed(c, &mut |b| out.push(b.to_vec())).is_err() {
                    ok = false;
                    break;
                }
                proptest::prop_assert!(d.buffered() <= d.max_buffered());
            }
            let (want, want_ok) = delimited_reference(&wire, delim, max);
            proptest::prop_assert_eq!(ok, want_ok, "chunks {:?}", chunks);
            if ok {
                proptest::prop_assert_eq!(out, want, "chunks {:?}", chunks);
            } else {
                proptest::prop_assert!(want.starts_with(&out), "chunks {:?}: {:?} vs {:?}", chunks, out, want);
            }
        }
    }

    #[test]
    fn raw_is_one_message_per_read() {
        assert_eq!(
            run(Framing::Raw, &[b"ab", b"c"]).unwrap(),
            vec![b"ab".to_vec(), b"c".to_vec()]
        );
    }
}
