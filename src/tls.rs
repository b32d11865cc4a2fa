//! TLS for the federation listener: the certificate chain and key from PEM files, read at
//! start and again on SIGHUP (certificates renewed by an ACME client are picked up without a
//! restart; a bad new pair is logged and the old one kept).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use anyhow::Context;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_rustls::TlsAcceptor;

/// The listener's TLS settings, replaceable while it runs.
pub struct TlsFiles {
    certificate: PathBuf,
    private_key: PathBuf,
    current: RwLock<TlsAcceptor>,
}

impl TlsFiles {
    pub fn load(certificate: &Path, private_key: &Path) -> anyhow::Result<Arc<Self>> {
        crate::outbound::install_crypto_provider();
        let acceptor = acceptor(certificate, private_key)?;
        Ok(Arc::new(Self {
            certificate: certificate.to_owned(),
            private_key: private_key.to_owned(),
            current: RwLock::new(acceptor),
        }))
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the files again; keeps the old pair if the new one does not load.
    pub fn reload(&self) {
        match acceptor(&self.certificate, &self.private_key) {
            Ok(acceptor) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = acceptor;
                tracing::info!(certificate = %self.certificate.display(), "federation TLS certificate reloaded");
            }
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    "federation TLS certificate not reloaded; keeping the old one"
                )
            }
        }
    }
}

fn acceptor(certificate: &Path, private_key: &Path) -> anyhow::Result<TlsAcceptor> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .with_context(|| format!("federation.tls_certificate: cannot read {}", certificate.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("federation.tls_certificate: {} is not PEM", certificate.display()))?;
    if chain.is_empty() {
        anyhow::bail!(
            "federation.tls_certificate: {} holds no certificate",
            certificate.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(private_key).with_context(|| {
        format!(
            "federation.tls_private_key: cannot read a key from {}",
            private_key.display()
        )
    })?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("federation TLS: the certificate and key do not go together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
