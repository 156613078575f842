//! TLS for TCP pipes, the I/O half: the OS's root certificates and PEM files. The protocol
//! (rustls driven in memory, deadlines, caps) is `pipe_core::tls`; set `Conf::tls`.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use pipe_io::tls::{self, TlsClient, TlsServer};
//! // A server: its certificate chain and key from PEM files.
//! let server = TlsServer::new(tls::load_certs("cert.pem")?, tls::load_key("key.pem")?).build()?;
//! // A client verified against the OS's roots (what `use_ssl: true` alone gives).
//! let client = TlsClient::new(tls::os_roots()).build()?;
//! # let _ = (server, client); Ok(()) }
//! ```

use std::io;
use std::path::Path;

use pipe_core::rustls::pki_types::pem::PemObject;
use pipe_core::rustls::RootCertStore;
pub use pipe_core::rustls_types::{CertificateDer, PrivateKeyDer, ServerName};
pub use pipe_core::{Tls, TlsClient, TlsError, TlsServer};

/// The OS's trusted root certificates (rustls-native-certs: `/etc/ssl/certs` and friends).
/// Certificates that do not parse are skipped; none found gives an empty store (every
/// server then fails verification with `TlsError::UnknownIssuer`, never silently passes).
pub fn os_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        log::debug!("loading the OS's root certificates: {e}");
    }
    let mut roots = RootCertStore::empty();
    let (added, skipped) = roots.add_parsable_certificates(found.certs);
    log::debug!("{added} OS root certificates loaded, {skipped} skipped");
    roots
}

/// Every certificate in a PEM file, in order (a chain: leaf first).
pub fn load_certs(path: impl AsRef<Path>) -> io::Result<Vec<CertificateDer<'static>>> {
    let path = path.as_ref();
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect();
    let certs = certs.map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: no certificate in the file", path.display()),
        ));
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: impl AsRef<Path>) -> io::Result<PrivateKeyDer<'static>> {
    let path = path.as_ref();
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(path, e))
}

/// Root certificates from a PEM file (a CA bundle).
pub fn load_roots(path: impl AsRef<Path>) -> io::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(load_certs(path.as_ref())?);
    if added == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: no usable root certificate", path.as_ref().display()),
        ));
    }
    Ok(roots)
}

fn pem_error(path: &Path, e: pipe_core::rustls::pki_types::pem::Error) -> io::Error {
    match e {
        pipe_core::rustls::pki_types::pem::Error::Io(e) => {
            io::Error::new(e.kind(), format!("{}: {e}", path.display()))
        }
        other => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {other:?}", path.display()),
        ),
    }
}

/// Fill in what a client's TLS config leaves to the destination: with `use_ssl` and no
/// config, a client verified against the OS's roots; with no server name, the
/// destination's host name (or IP address).
pub(crate) fn complete_client(conf: &mut pipe_core::Conf, host: Option<&pipe_core::Host>) {
    if conf.use_ssl && conf.tls.is_none() {
        match TlsClient::new(os_roots()).build() {
            Ok(t) => conf.tls = Some(t),
            Err(e) => log::debug!("default TLS client config: {e}"),
        }
    }
    if let (Some(Tls::Client { name, .. }), Some(host)) = (conf.tls.as_mut(), host) {
        if name.is_none() {
            *name = match host {
                pipe_core::Host::Name(n) => ServerName::try_from(n.clone()).ok(),
                pipe_core::Host::Ip(ip) => Some(ServerName::IpAddress((*ip).into())),
            };
        }
    }
}
