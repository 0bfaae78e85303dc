//! The listener: one port for gRPC (HTTP/2), REST (HTTP/1.1 or HTTP/2) and WebSocket
//! (HTTP/1.1 upgrades), plain or TLS. tonic's own server offers neither HTTP/1.1 upgrades nor
//! HTTP/1.1 under TLS (its ALPN is h2 only), so the router is served here with hyper's
//! automatic HTTP/1-or-2 connections and a rustls acceptor offering both by ALPN.
//!
//! Each connection's peer goes into the request as tonic's [`TcpConnectInfo`], so
//! `Request::remote_addr` works for the gRPC services as under tonic's server. Handshakes run
//! in the connection's task, bounded by [`HANDSHAKE_TIMEOUT`]; a slow one holds up nobody.
//! On stop the listener closes and open connections are asked to finish (HTTP/2 GOAWAY,
//! HTTP/1.1 close after the response); the caller bounds the wait.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::TcpConnectInfo;
use tower::ServiceExt;

use crate::tls::HANDSHAKE_TIMEOUT;

/// Pause after a failed accept (out of file descriptors, say) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` until `stop` resolves, then waits for open connections to
/// finish.
///
/// # Errors
/// Only when the listener's address cannot be read; accept failures are logged and retried.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(message = "Accept failed.", %error);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = tcp.set_nodelay(true);
        let info = TcpConnectInfo {
            local_addr: Some(local),
            remote_addr: Some(remote),
        };
        let service = router
            .clone()
            .map_request(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(info.clone());
                request
            });
        let service = TowerToHyperService::new(service);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let served = match acceptor {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    let Some(stream) = handshake(&acceptor, tcp, remote).await else {
                        return;
                    };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(error) = served {
                tracing::debug!(message = "Connection ended with an error.", %remote, %error);
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(message = "TLS handshake failed.", %remote, %error);
            None
        }
        Err(_) => {
            tracing::debug!(message = "TLS handshake timed out.", %remote);
            None
        }
    }
}
