//! Access tokens: HS256 JWTs signed with `JWT_SECRET`, their claims, and the rules for
//! checking them. No I/O here: `routes::caller` reads the token from a request and turns
//! the outcome into an answer, and `boardcast token` mints tokens through [`Tokens::mint`].
//!
//! Verification follows the usual advice for JWTs (and Mercure's spec for SSE hubs): an
//! explicit algorithm allow-list (HS256 only, so `alg: none` and every other algorithm are
//! refused), `exp` and `sub` required, a small explicit leeway for clock skew, and `aud`
//! refused when present (a token minted for another service is not one of ours).
//! No message built here ever contains the token or any part of it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::domain::{
    ids::BoardId,
    viewer::{NameError, display_name},
};

/// Clock skew tolerated on `exp` (and `nbf`) when a token arrives. Small on purpose: a
/// token is refused at most this long after it expired. A stream is still closed at the
/// exact `exp`.
pub const LEEWAY: Duration = Duration::from_secs(5);

/// Below this many bytes an HS256 secret is weaker than the hash (RFC 7518 §3.2 asks for a
/// key at least as long as the hash output, 256 bits).
pub(crate) const SECRET_MIN_BYTES: usize = 32;

/// What a token says about its holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who holds the token: the client that rate limits and stream caps count against.
    pub sub: String,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, in seconds since the Unix epoch (set by `boardcast token`; not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Display name: the `author` of notes and the viewer's name in presence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The boards the token may touch; `None` (absent or null) is every board.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boards: Option<Vec<BoardId>>,
    /// May read and stream, but not write.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readonly: bool,
}

impl Claims {
    /// The name shown for this holder: `name`, else `sub`.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.sub)
    }

    /// When the token stops being valid; `None` for an `exp` too far out to represent.
    pub fn expires_at(&self) -> Option<SystemTime> {
        UNIX_EPOCH.checked_add(Duration::from_secs(self.exp))
    }

    /// Whether the token grants `board` (before `readonly` is considered).
    pub fn grants(&self, board: BoardId) -> bool {
        self.boards
            .as_ref()
            .is_none_or(|list| list.contains(&board))
    }

    /// Checks what the signature cannot: a usable `sub` and `name`. Empty names count as
    /// absent.
    fn checked(mut self) -> Result<Claims, TokenError> {
        if self.sub.trim().is_empty() {
            return Err(TokenError::BadClaim("`sub` must not be empty"));
        }
        if self.sub.chars().any(char::is_control) {
            return Err(TokenError::BadClaim(
                "`sub` must not contain control characters",
            ));
        }
        if let Some(name) = &self.name {
            self.name = display_name(name).map_err(TokenError::BadName)?;
        }
        Ok(self)
    }
}

/// Why a token was refused. The messages are for clients: they name the problem, never the
/// token.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired; get a fresh one")]
    Expired,
    #[error("the token's signature does not verify (signed with another key?)")]
    BadSignature,
    #[error("the token must be signed with HS256")]
    WrongAlgorithm,
    #[error("the token lacks the `{0}` claim")]
    MissingClaim(&'static str),
    #[error("the token is not valid yet (`nbf` is in the future)")]
    NotYetValid,
    #[error("the token is meant for another service (`aud`)")]
    WrongAudience,
    #[error("the token's claim {0}")]
    BadClaim(&'static str),
    #[error("the token's claim `name` {0}")]
    BadName(NameError),
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token could not be signed")]
    Signing,
}

/// The keys and rules for `JWT_SECRET`'s tokens. Deliberately not `Debug`: it holds the
/// secret.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Tokens {
    pub fn new(secret: &str) -> Tokens {
        let mut validation = Validation::new(Algorithm::HS256);
        // Explicit, although `new` says the same: HS256 and nothing else.
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // No audience is configured, so a token carrying `aud` is refused.
        validation.validate_aud = true;
        Tokens {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Checks the signature, the algorithm, `exp` (with [`LEEWAY`]) and the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                    TokenError::WrongAlgorithm
                }
                ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
                    "sub" => TokenError::MissingClaim("sub"),
                    "exp" => TokenError::MissingClaim("exp"),
                    _ => TokenError::Malformed,
                },
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                // Bad base64, bad JSON (including `"alg": "none"`, which is no algorithm
                // jsonwebtoken knows), wrong claim types, not three parts.
                _ => TokenError::Malformed,
            })?;
        data.claims.checked()
    }

    /// Signs `claims` with HS256.
    pub fn mint(&self, claims: &Claims) -> Result<String, TokenError> {
        let claims = claims.clone().checked()?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| TokenError::Signing)
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "ana".into(),
            exp,
            iat: None,
            name: Some("Ana".into()),
            boards: None,
            readonly: false,
        }
    }

    #[test]
    fn a_minted_token_verifies_with_its_claims() {
        let tokens = Tokens::new("a secret long enough for HS256 keys..");
        let minted = claims(now_secs() + 60);
        let token = tokens.mint(&minted).expect("signs");
        assert_eq!(tokens.verify(&token).expect("verifies"), minted);
    }

    #[test]
    fn expiry_allows_only_the_small_leeway() {
        let tokens = Tokens::new("secret");
        let recent = tokens.mint(&claims(now_secs() - 2)).expect("signs");
        assert!(tokens.verify(&recent).is_ok(), "inside the leeway");
        let old = tokens.mint(&claims(now_secs() - 30)).expect("signs");
        assert_eq!(tokens.verify(&old), Err(TokenError::Expired));
    }

    #[test]
    fn another_key_does_not_verify() {
        let token = Tokens::new("one")
            .mint(&claims(now_secs() + 60))
            .expect("signs");
        assert_eq!(
            Tokens::new("two").verify(&token),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_malformed_and_never_echoed() {
        let tokens = Tokens::new("secret");
        for junk in [
            "",
            "abc",
            "a.b.c",
            "eyJhbGciOiJub25lIn0.e30.",
            "..",
            "💥.💥.💥",
        ] {
            let err = tokens.verify(junk).expect_err(junk);
            assert!(
                junk.len() < 4 || !err.to_string().contains(junk),
                "{junk}: {err}"
            );
        }
    }

    #[test]
    fn a_board_list_limits_what_is_granted() {
        let board = BoardId::new();
        let mut c = claims(1);
        assert!(c.grants(board));
        c.boards = Some(vec![]);
        assert!(!c.grants(board));
        c.boards = Some(vec![board]);
        assert!(c.grants(board));
    }

    #[test]
    fn empty_names_fall_back_to_the_subject_and_odd_ones_are_refused() {
        let tokens = Tokens::new("secret");
        let mut c = claims(now_secs() + 60);
        c.name = Some("  ".into());
        let token = tokens.mint(&c).expect("signs");
        assert_eq!(tokens.verify(&token).expect("ok").display_name(), "ana");
        c.name = Some("a\nb".into());
        assert!(matches!(tokens.mint(&c), Err(TokenError::BadName(_))));
        c.name = None;
        c.sub = String::new();
        assert!(matches!(tokens.mint(&c), Err(TokenError::BadClaim(_))));
    }

    #[test]
    fn an_exp_beyond_the_clock_has_no_expiry_time() {
        assert!(claims(u64::MAX).expires_at().is_none());
        assert!(claims(10).expires_at().is_some());
    }
}
