//! The signal handler: who sends, as which viewer, how fast; then `realtime::signals`
//! carries it. Answers 202 with no body: a signal is broadcast, never stored.

use actix_web::{HttpResponse, web};

use super::openapi::params::BoardPath;
use super::{AppState, Caller, request, request::PathIds};
use crate::domain::{
    ids::BoardId,
    signal::{SignalBody, SignalInput},
};
use crate::error::ApiError;

/// `POST /api/boards/{id}/signals`. Read-only tokens may send (nothing stored changes), and
/// the write rate limit does not apply: `SIGNAL_RATE_LIMIT` per viewer does.
#[utoipa::path(
    post,
    operation_id = "sendSignal",
    path = "/api/boards/{board_id}/signals",
    tag = "stream",
    params(BoardPath),
    request_body = SignalInput,
    responses((
        status = 202,
        description = "Taken: every stream of the board (the sender's own included) gets it as \
            `event: signal` within about 50 ms, unless a newer one of the same viewer, kind and \
            note replaces it. 403 when `viewer` is not one of the caller's open streams of the \
            board; 429 past SIGNAL_RATE_LIMIT per viewer.",
    )),
)]
pub async fn send(
    PathIds(board): PathIds<BoardId>,
    caller: Caller,
    state: web::Data<AppState>,
    body: request::JsonBody<SignalInput>,
) -> Result<HttpResponse, ApiError> {
    caller.may_read(board)?;
    let signal = SignalBody::parse(body.read().await?).map_err(|e| ApiError::Validation(e.0))?;
    let signals = state.live.signals();
    let sender = signals
        .sender(board, signal.viewer, caller.subject())
        .await?;
    signals.check_rate(signal.viewer)?;
    signals.push(board, signal, &sender);
    Ok(HttpResponse::Accepted().finish())
}
