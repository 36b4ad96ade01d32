//! A member connection's byte stream: plain TCP, or TLS over TCP for `https://` members (rustls,
//! [`lookahead_client::tls`]: system roots plus the optional CA bundle). A refused handshake is
//! [`HandshakeError::Tls`] with a `tls_*` label; the plain variant adds nothing on the http path
//! but a match per poll.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Why a TLS handshake failed.
#[derive(Debug)]
pub enum HandshakeError {
    /// The certificate or the TLS exchange was refused (`tls_*` label).
    Tls(lookahead_client::tls::TlsFailure),
    /// Reset or closed during the handshake (the member is not there yet), or a host that is
    /// not a TLS server name.
    Io(String),
    Timeout,
}

/// The TLS handshake with the member named `host` (its certificate must name it), within
/// `timeout`.
pub async fn handshake(
    tls: &TlsConnector,
    host: &str,
    stream: TcpStream,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, HandshakeError> {
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| HandshakeError::Io(format!("not a TLS server name: {e}")))?;
    match tokio::time::timeout(timeout, tls.connect(name, stream)).await {
        Err(_) => Err(HandshakeError::Timeout),
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(match lookahead_client::tls::tls_failure(&e) {
            Some(f) => HandshakeError::Tls(f),
            None => HandshakeError::Io(format!("TLS handshake: {e}")),
        }),
    }
}

/// A connection's byte stream: plain TCP, or TLS over TCP.
pub enum MemberStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for MemberStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MemberStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MemberStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MemberStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MemberStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MemberStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MemberStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MemberStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MemberStream::Plain(s) => s.is_write_vectored(),
            MemberStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MemberStream::Plain(s) => Pin::new(s).poll_flush(cx),
            MemberStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MemberStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MemberStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
