//! TLS for TCP pipes: rustls driven in memory, at the session seam between socket bytes and
//! framing (`socket bytes → TLS → framing → the inbound pipeline`, and back).
//!
//! - **Verified by default.** A client checks the server's certificate chain against the roots
//!   it is given (pipe-io loads the OS's roots when none are given) and the server name; the
//!   only way around it is [`TlsClient::dangerous_accept_any_certificate`], named so that it
//!   is seen in review, for self-signed peer-to-peer use.
//! - **One crypto provider**, chosen here once: *ring* (`rustls::crypto::ring`), for its
//!   build (no cmake, unlike aws-lc-rs) and its track record. TLS 1.2 and 1.3.
//! - **Deadlines and caps are the engine's**: the handshake must finish within
//!   `Conf::ssl_handshake` ([`TlsError::HandshakeTimeout`]), and a server has at most
//!   `Conf::max_handshakes` handshakes in progress.
//! - **Clean ends are told apart from truncation**: `close()` sends `close_notify`; a peer
//!   that closes the connection without it ends the pipe with [`TlsError::Truncated`].
//! - The engine reads no clock; rustls checks certificate validity against the system's wall
//!   clock (its default time provider), the one place the core's TLS touches the OS.

use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
pub use rustls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig, SignatureScheme};

/// Why TLS failed or ended a pipe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The peer's certificate is not signed by a trusted root.
    #[error("certificate signed by an unknown issuer")]
    UnknownIssuer,
    /// The peer's certificate is not valid for the name asked for.
    #[error("certificate not valid for the server name")]
    WrongName,
    /// The peer's certificate has expired (or is not valid yet).
    #[error("certificate expired or not yet valid")]
    Expired,
    /// Another certificate problem (bad encoding, revoked, wrong usage ...), or the peer
    /// sent none when one is required.
    #[error("bad certificate: {0}")]
    BadCertificate(String),
    /// The peer refused our certificate or the handshake with an alert.
    #[error("the peer sent the alert {0}")]
    PeerAlert(String),
    /// The handshake did not finish within `Conf::ssl_handshake`.
    #[error("the TLS handshake did not finish in time")]
    HandshakeTimeout,
    /// The server had `Conf::max_handshakes` handshakes in progress when a new connection
    /// came: the oldest (this one) gave way.
    #[error("the TLS handshake gave way to a newer one (server at its handshake limit)")]
    HandshakeEvicted,
    /// The peer closed the connection without `close_notify`: the data may be cut short.
    #[error("the peer closed without close_notify (truncation)")]
    Truncated,
    /// Anything else rustls reports (a protocol violation, a decrypt error ...).
    #[error("TLS: {0}")]
    Protocol(String),
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => TlsError::UnknownIssuer,
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => TlsError::WrongName,
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => TlsError::Expired,
                other => TlsError::BadCertificate(format!("{other:?}")),
            },
            rustls::Error::NoCertificatesPresented => {
                TlsError::BadCertificate("the peer sent no certificate".into())
            }
            rustls::Error::AlertReceived(a) => TlsError::PeerAlert(format!("{a:?}")),
            other => TlsError::Protocol(other.to_string()),
        }
    }
}

/// The crypto provider every config is built with (see the module documentation).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS configuration for a pipe: [`Tls::Client`] for pipes that connect, [`Tls::Server`]
/// for listeners (their connections inherit it). Set it as `Conf::tls`. Cheap to clone.
#[derive(Clone)]
pub enum Tls {
    /// Connect as a TLS client.
    Client {
        /// The rustls client config (roots, ALPN, client certificate).
        config: Arc<ClientConfig>,
        /// The name to verify the server's certificate against; `None`: the destination's
        /// host name or IP address.
        name: Option<ServerName<'static>>,
    },
    /// Accept TLS connections.
    Server {
        /// The rustls server config (certificate chain and key, ALPN, client verification).
        config: Arc<ServerConfig>,
    },
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tls::Client { name, config } => f
                .debug_struct("Tls::Client")
                .field("name", name)
                .field("alpn", &config.alpn_protocols)
                .finish_non_exhaustive(),
            Tls::Server { config } => f
                .debug_struct("Tls::Server")
                .field("alpn", &config.alpn_protocols)
                .finish_non_exhaustive(),
        }
    }
}

impl PartialEq for Tls {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Tls::Client { config: a, name: n }, Tls::Client { config: b, name: m }) => {
                Arc::ptr_eq(a, b) && n == m
            }
            (Tls::Server { config: a }, Tls::Server { config: b }) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Tls {}

/// Builds a client [`Tls`]: verified against `roots`, TLS 1.2 and 1.3.
#[derive(Debug, Clone)]
pub struct TlsClient {
    roots: RootCertStore,
    name: Option<ServerName<'static>>,
    alpn: Vec<Vec<u8>>,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    accept_any: bool,
}

impl TlsClient {
    /// Verify servers against `roots` (pipe-io's `TlsClient::os_roots` loads the OS's).
    pub fn new(roots: RootCertStore) -> Self {
        Self {
            roots,
            name: None,
            alpn: Vec::new(),
            identity: None,
            accept_any: false,
        }
    }

    /// Verify against these root certificates (DER).
    pub fn with_roots(certs: impl IntoIterator<Item = CertificateDer<'static>>) -> Self {
        let mut roots = RootCertStore::empty();
        for c in certs {
            // A root that does not parse cannot be trusted: skip it.
            let _ = roots.add(c);
        }
        Self::new(roots)
    }

    /// The name the server's certificate must be valid for (default: the destination).
    pub fn server_name(mut self, name: ServerName<'static>) -> Self {
        self.name = Some(name);
        self
    }

    /// Offer these ALPN protocols, most preferred first.
    pub fn alpn(mut self, protocols: impl IntoIterator<Item = Vec<u8>>) -> Self {
        self.alpn = protocols.into_iter().collect();
        self
    }

    /// Present this certificate chain and key when the server asks (mutual TLS).
    pub fn client_cert(
        mut self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Self {
        self.identity = Some((chain, Arc::new(key)));
        self
    }

    /// **Do not verify the server's certificate at all**: any certificate, any name, any
    /// issuer is accepted (signatures on the handshake are still checked). For self-signed
    /// peer-to-peer use where the peer is authenticated some other way; never for talking
    /// to servers you do not control.
    pub fn dangerous_accept_any_certificate(mut self) -> Self {
        self.accept_any = true;
        self
    }

    /// The configuration.
    pub fn build(self) -> Result<Tls, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::from)?;
        let builder = if self.accept_any {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
        } else {
            builder.with_root_certificates(self.roots)
        };
        let mut config = match self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key.clone_key())
                .map_err(TlsError::from)?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn;
        Ok(Tls::Client {
            config: Arc::new(config),
            name: self.name,
        })
    }
}

/// Builds a server [`Tls`]: a certificate chain and its key, TLS 1.2 and 1.3.
#[derive(Debug)]
pub struct TlsServer {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: Vec<Vec<u8>>,
    client_roots: Option<RootCertStore>,
}

impl TlsServer {
    /// Serve with this chain (leaf first) and key.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Self {
        Self {
            chain,
            key,
            alpn: Vec::new(),
            client_roots: None,
        }
    }

    /// Accept these ALPN protocols, most preferred first.
    pub fn alpn(mut self, protocols: impl IntoIterator<Item = Vec<u8>>) -> Self {
        self.alpn = protocols.into_iter().collect();
        self
    }

    /// Require a client certificate signed by one of `roots` (mutual TLS).
    pub fn require_client_cert(mut self, roots: RootCertStore) -> Self {
        self.client_roots = Some(roots);
        self
    }

    /// The configuration.
    pub fn build(self) -> Result<Tls, TlsError> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::from)?;
        let builder = match self.client_roots {
            Some(roots) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(self.chain, self.key)
            .map_err(TlsError::from)?;
        config.alpn_protocols = self.alpn;
        Ok(Tls::Server {
            config: Arc::new(config),
        })
    }
}

/// The verifier behind [`TlsClient::dangerous_accept_any_certificate`]: every certificate is
/// accepted, handshake signatures are still verified with the provider's algorithms.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What one batch of socket bytes produced.
#[derive(Debug, Default)]
pub(crate) struct TlsIn {
    /// Decrypted application data.
    pub(crate) plain: Vec<u8>,
    /// The handshake finished with this batch.
    pub(crate) handshake_done: bool,
    /// The peer sent `close_notify`.
    pub(crate) peer_closed: bool,
}

/// One connection's TLS state.
pub(crate) struct TlsSession {
    conn: rustls::Connection,
    /// The peer sent `close_notify`.
    pub(crate) peer_closed: bool,
    /// Plaintext accepted while the handshake runs, which rustls holds until it is done. The
    /// engine counts it as queued output (`max_out_bytes`), since it is not in the pipe's
    /// transmit queue yet.
    early: usize,
}

impl fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.conn.is_handshaking())
            .field("peer_closed", &self.peer_closed)
            .finish()
    }
}

impl TlsSession {
    /// A client session for `name` (the destination when the config names none).
    ///
    /// rustls's own output limit is off: a limited write is taken in part, and a caller that
    /// retried the whole message would send its first part twice (and one message larger
    /// than the limit could never be sent). The engine's `max_out_bytes` bounds what a
    /// session holds instead: what it takes during the handshake counts ([`Self::early`]),
    /// and what it encrypts goes straight to the pipe's transmit queue.
    pub(crate) fn client(
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Self, TlsError> {
        let mut conn = rustls::ClientConnection::new(config, name).map_err(TlsError::from)?;
        conn.set_buffer_limit(None);
        Ok(Self {
            conn: conn.into(),
            peer_closed: false,
            early: 0,
        })
    }

    /// A server session (rustls's output limit off, as for [`Self::client`]).
    pub(crate) fn server(config: Arc<ServerConfig>) -> Result<Self, TlsError> {
        let mut conn = rustls::ServerConnection::new(config).map_err(TlsError::from)?;
        conn.set_buffer_limit(None);
        Ok(Self {
            conn: conn.into(),
            peer_closed: false,
            early: 0,
        })
    }

    /// Plaintext taken during the handshake and not yet encrypted (rustls holds it until the
    /// handshake is done).
    pub(crate) fn early(&self) -> usize {
        self.early
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Feed socket bytes: all of `data` is consumed.
    pub(crate) fn inbound(&mut self, mut data: &[u8]) -> Result<TlsIn, TlsError> {
        let was_handshaking = self.conn.is_handshaking();
        let mut out = TlsIn::default();
        while !data.is_empty() {
            match self.conn.read_tls(&mut data) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(TlsError::Protocol(e.to_string())),
            }
            let state = self.conn.process_new_packets().map_err(TlsError::from)?;
            let pending = state.plaintext_bytes_to_read();
            if pending > 0 {
                // Appended without zero-filling first; `WouldBlock` ends it when drained.
                out.plain.reserve(pending);
                let _ = self.conn.reader().read_to_end(&mut out.plain);
            }
            if state.peer_has_closed() {
                self.peer_closed = true;
                out.peer_closed = true;
            }
        }
        if out.plain.capacity() - out.plain.len() > 4096 {
            // The buffer becomes the message (a Raw read): what queues count is what it holds.
            out.plain.shrink_to_fit();
        }
        out.handshake_done = was_handshaking && !self.conn.is_handshaking();
        Ok(out)
    }

    /// Encrypt `plain` for the peer (held by rustls until the handshake is done). All of it
    /// or none: false when rustls took less (it has no output limit, so only a session
    /// that can no longer write refuses).
    pub(crate) fn write_plain(&mut self, plain: &[u8]) -> bool {
        let handshaking = self.conn.is_handshaking();
        match self.conn.writer().write(plain) {
            Ok(n) if n == plain.len() => {
                if handshaking {
                    self.early += n;
                }
                true
            }
            _ => false,
        }
    }

    /// Start the clean close: queue `close_notify`.
    pub(crate) fn close_notify(&mut self) {
        self.conn.send_close_notify();
    }

    /// TLS records waiting to go to the socket, if any. `hint`: the plaintext just written,
    /// so the buffer is sized once (records add 22 bytes each, per 16 KiB at most).
    pub(crate) fn take_outgoing_sized(&mut self, hint: usize) -> Option<Bytes> {
        self.settle_early();
        if !self.conn.wants_write() {
            return None;
        }
        let mut buf = Vec::with_capacity(hint + (hint / 16_384 + 1) * 64 + 64);
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        (!buf.is_empty()).then(|| Bytes::from(buf))
    }

    /// TLS records waiting to go to the socket, if any.
    pub(crate) fn take_outgoing(&mut self) -> Option<Bytes> {
        self.settle_early();
        if !self.conn.wants_write() {
            return None;
        }
        let mut buf = Vec::new();
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        (!buf.is_empty()).then(|| Bytes::from(buf))
    }

    /// Once the handshake is done rustls has encrypted what it held: that is in the records
    /// about to be taken, no longer early.
    fn settle_early(&mut self) {
        if self.early > 0 && !self.conn.is_handshaking() {
            self.early = 0;
        }
    }

    /// The ALPN protocol agreed on, once the handshake is done.
    pub(crate) fn alpn(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }
}
