//! The signals that stop the server.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on SIGTERM (Heroku's stop) or Ctrl-C. actix's own signal handling is
/// off (`shutdown_signal`), so streams are ended by us before the drain starts; actix's
/// default would keep them open until its 30 s timeout races Heroku's SIGKILL.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = match signal(SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    log::error!("cannot watch SIGTERM: {e}");
                    return;
                }
            };
            tokio::select! {
                _ = term.recv() => log::info!("SIGTERM: closing streams and draining"),
                _ = tokio::signal::ctrl_c() => log::info!("interrupted: closing streams and draining"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        token.cancel();
    });
}
