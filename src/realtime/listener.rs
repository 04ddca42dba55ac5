//! A dedicated LISTEN connection for one stream (`LISTENER=per-stream`).
//!
//! The connection is opened for the stream, outside the pool, and lives exactly as long as
//! it: dropping the `Listener` drops the client, and tokio-postgres then sends Terminate
//! and closes the socket, so the backend leaves `pg_stat_activity` at once.

use std::time::Duration;

use futures_util::{StreamExt, stream};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client};

use crate::db::{Database, DbError};
use crate::domain::ids::BoardId;

/// Listener connections show as `boardcast listener` in `pg_stat_activity`.
pub const LISTENER_APPLICATION: &str = "listener";

/// What the connection's driver reports.
#[derive(Debug)]
pub enum Signal {
    /// A NOTIFY payload on the board's channel.
    Notice(String),
    /// The connection is gone; notifications from now on are lost until a new LISTEN.
    Lost(String),
}

pub struct Listener {
    client: Client,
    signals: mpsc::UnboundedReceiver<Signal>,
}

/// Identifiers cannot be bound as parameters: quote, doubling any quote inside.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Listener {
    /// Connects and LISTENs on the board's channel; returns only once LISTEN has succeeded,
    /// so nothing committed after this returns can be missed.
    pub async fn open(db: &Database, board: BoardId) -> Result<Listener, DbError> {
        let (client, mut connection) = db.connect_dedicated(LISTENER_APPLICATION).await?;
        let (tx, signals) = mpsc::unbounded_channel();
        // The driver must be polled for queries to run and notifications to arrive.
        tokio::spawn(async move {
            let mut messages = stream::poll_fn(move |cx| connection.poll_message(cx));
            loop {
                let signal = match messages.next().await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        Signal::Notice(n.payload().to_string())
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => Signal::Lost(e.to_string()),
                    None => Signal::Lost("connection closed".into()),
                };
                let last = matches!(signal, Signal::Lost(_));
                if tx.send(signal).is_err() || last {
                    break;
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {}", quote_ident(&board.channel())))
            .await?;
        Ok(Listener { client, signals })
    }

    /// The next notification or the news that the connection is gone.
    pub async fn recv(&mut self) -> Signal {
        self.signals
            .recv()
            .await
            .unwrap_or_else(|| Signal::Lost("listener driver ended".into()))
    }

    /// Whether the backend answers within `limit`. A hung backend (stopped, or behind a
    /// dead network path) is not noticed by TCP keepalive, since the kernel still ACKs.
    pub async fn ping(&self, limit: Duration) -> bool {
        matches!(
            tokio::time::timeout(limit, self.client.simple_query("")).await,
            Ok(Ok(_))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::quote_ident;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("boards_ab"), "\"boards_ab\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
