//! The TLS workloads' certificates and configs. The server makes a self-signed certificate for
//! `localhost` at start (rcgen) and prints it (`CERT <hex DER>`) before its port; the pair
//! hands it to the client, which trusts it alone.
//!
//! Both sides use **one** rustls configuration: the configs are built once by pipes'
//! `TlsServer`/`TlsClient` (rustls 0.23, the ring provider, its default protocol versions and
//! cipher-suite order), and raw tokio-rustls is given the very `ServerConfig`/`ClientConfig`
//! inside those `Tls` values. The raw client checks that TLS 1.3 and the provider's first
//! TLS 1.3 suite were negotiated; pipes, with the same configs on both ends, negotiate the
//! same. The ratio therefore compares the I/O layer around rustls, not the crypto.

use std::fmt::Write;
use std::sync::Arc;

use pipe_io::tls::{CertificateDer, PrivateKeyDer, ServerName};
use pipe_io::{Tls, TlsClient, TlsServer};
use tokio_rustls::rustls::{
    self, ClientConfig, CommonState, ProtocolVersion, ServerConfig, SupportedCipherSuite,
};

use crate::spec::Res;

/// The name in the certificate, and the one the client verifies.
pub const NAME: &str = "localhost";

/// A server's TLS config (a fresh self-signed certificate for [`NAME`]) and that
/// certificate, in hex, for the client.
pub fn server() -> Res<(Tls, String)> {
    let ck = rcgen::generate_simple_self_signed(vec![NAME.to_string()])?;
    let der: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let tls = TlsServer::new(vec![der.clone()], key).build()?;
    Ok((tls, hex(&der)))
}

/// A client's TLS config trusting only the certificate `cert_hex` (from [`server`]), for
/// the name [`NAME`].
pub fn client(cert_hex: &str) -> Res<Tls> {
    let der = CertificateDer::from(unhex(cert_hex)?);
    Ok(TlsClient::with_roots([der])
        .server_name(ServerName::try_from(NAME)?.to_owned())
        .build()?)
}

/// The rustls config inside a server [`Tls`] (for tokio-rustls).
pub fn server_config(tls: &Tls) -> Res<Arc<ServerConfig>> {
    match tls {
        Tls::Server { config } => Ok(config.clone()),
        _ => Err("not a TLS server config".into()),
    }
}

/// The rustls config and server name inside a client [`Tls`] (for tokio-rustls).
pub fn client_config(tls: &Tls) -> Res<(Arc<ClientConfig>, ServerName<'static>)> {
    match tls {
        Tls::Client {
            config,
            name: Some(name),
        } => Ok((config.clone(), name.clone())),
        _ => Err("not a TLS client config with a server name".into()),
    }
}

/// The suite both sides are expected to agree on: the ring provider's first TLS 1.3 suite.
pub fn expected_suite() -> Option<SupportedCipherSuite> {
    rustls::crypto::ring::default_provider()
        .cipher_suites
        .into_iter()
        .find(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
}

/// What the header says about TLS.
pub fn describe() -> String {
    let suite = expected_suite().map_or("?".into(), |s| format!("{:?}", s.suite()));
    format!("rustls 0.23 (ring), TLS 1.3, {suite}, one config for raw and pipes")
}

/// Fail unless the connection negotiated TLS 1.3 with [`expected_suite`].
pub fn check(conn: &CommonState) -> Res {
    let version = conn.protocol_version();
    let suite = conn.negotiated_cipher_suite().map(|s| s.suite());
    if version != Some(ProtocolVersion::TLSv1_3) || suite != expected_suite().map(|s| s.suite()) {
        return Err(format!(
            "negotiated {version:?} {suite:?}, not TLS 1.3 with the expected suite"
        )
        .into());
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn unhex(s: &str) -> Res<Vec<u8>> {
    if s.len() % 2 != 0 {
        return Err("odd hex length".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| Ok(u8::from_str_radix(&s[i..i + 2], 16)?))
        .collect()
}
