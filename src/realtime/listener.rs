//! A dedicated LISTEN connection, outside the pool: one per stream (`LISTENER=per-stream`)
//! or one per instance for all its boards (`LISTENER=shared`).
//!
//! Dropping the `Listener` drops the client, and tokio-postgres then sends Terminate and
//! closes the socket, so the backend leaves `pg_stat_activity` at once.

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
pub enum ListenerEvent {
    /// A NOTIFY payload on one of the listened channels.
    Notification { channel: String, payload: String },
    /// The connection is gone; notifications from now on are lost until a new LISTEN.
    Lost(String),
}

pub struct Listener {
    client: Client,
    events: mpsc::UnboundedReceiver<ListenerEvent>,
}

/// Identifiers cannot be bound as parameters: quote, doubling any quote inside.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The board a channel name belongs to (`boards_<uuid>`).
pub fn board_of(channel: &str) -> Option<BoardId> {
    channel
        .strip_prefix("boards_")
        .and_then(|id| BoardId::parse(id).ok())
}

impl Listener {
    /// Connects; LISTENs on nothing yet.
    pub async fn connect(db: &Database) -> Result<Listener, DbError> {
        let (client, mut connection) = db.connect_dedicated(LISTENER_APPLICATION).await?;
        let (tx, events) = mpsc::unbounded_channel();
        // The driver must be polled for queries to run and notifications to arrive.
        tokio::spawn(async move {
            let mut messages = stream::poll_fn(move |cx| connection.poll_message(cx));
            loop {
                let event = match messages.next().await {
                    Some(Ok(AsyncMessage::Notification(n))) => ListenerEvent::Notification {
                        channel: n.channel().to_string(),
                        payload: n.payload().to_string(),
                    },
                    // A server notice (a warning, a deprecation, a shutdown announcement)
                    // is not a NOTIFY: worth a line when debugging, nothing to deliver.
                    Some(Ok(AsyncMessage::Notice(notice))) => {
                        log::debug!(
                            "PostgreSQL notice on a listener connection: {} {}: {}",
                            notice.severity(),
                            notice.code().code(),
                            notice.message()
                        );
                        continue;
                    }
                    Some(Ok(_)) => continue,
                    // Through DbError: tokio-postgres's own Display is just "db error",
                    // without the server's message and SQLSTATE (found by the soak).
                    Some(Err(e)) => ListenerEvent::Lost(DbError::from(e).to_string()),
                    None => ListenerEvent::Lost("connection closed".into()),
                };
                let last = matches!(event, ListenerEvent::Lost(_));
                if tx.send(event).is_err() || last {
                    break;
                }
            }
        });
        Ok(Listener { client, events })
    }

    /// Connects and LISTENs on the channels of a stream's boards (one, or all of a
    /// many-board stream's); returns only once LISTEN has succeeded, so nothing committed
    /// after this returns can be missed.
    pub async fn open(db: &Database, boards: &[BoardId]) -> Result<Listener, DbError> {
        let listener = Listener::connect(db).await?;
        listener.listen(boards).await?;
        Ok(listener)
    }

    pub async fn listen(&self, boards: &[BoardId]) -> Result<(), DbError> {
        self.run_each("LISTEN", boards).await
    }

    pub async fn unlisten(&self, boards: &[BoardId]) -> Result<(), DbError> {
        self.run_each("UNLISTEN", boards).await
    }

    async fn run_each(&self, verb: &str, boards: &[BoardId]) -> Result<(), DbError> {
        if boards.is_empty() {
            return Ok(());
        }
        let sql: String = boards
            .iter()
            .map(|b| format!("{verb} {};", quote_ident(&b.channel())))
            .collect();
        self.client.batch_execute(&sql).await?;
        Ok(())
    }

    /// The next notification or the news that the connection is gone.
    pub async fn recv(&mut self) -> ListenerEvent {
        self.events
            .recv()
            .await
            .unwrap_or_else(|| ListenerEvent::Lost("listener driver ended".into()))
    }

    /// A notification (or the news of the loss) that has already arrived, without waiting.
    pub fn try_recv(&mut self) -> Option<ListenerEvent> {
        self.events.try_recv().ok()
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
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("boards_ab"), "\"boards_ab\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn channels_name_their_board() {
        let board = BoardId::new();
        assert_eq!(board_of(&board.channel()), Some(board));
        assert_eq!(board_of("other"), None);
    }
}
