//! Keeping secrets out of logs.

use actix_web::http::Uri;

/// Query parameters whose values never reach a log line.
const SECRET_PARAMS: &[&str] = &["access_token", "token"];

/// The path and query of `uri` with secret parameter values replaced by `REDACTED`.
pub fn path_and_query(uri: &Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_string();
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            // Compare the key as the query parser will read it: `access%5Ftoken` is
            // `access_token` to serde_urlencoded, so it must be redacted too.
            let decoded = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
            if SECRET_PARAMS
                .iter()
                .any(|s| key.eq_ignore_ascii_case(s) || decoded.eq_ignore_ascii_case(s))
            {
                format!("{key}=REDACTED")
            } else {
                pair.to_string()
            }
        })
        .collect();
    format!("{}?{}", uri.path(), redacted.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_redacted() {
        let uri: Uri = "/api/boards/x/events?name=Ana&access_token=abc.def.ghi"
            .parse()
            .expect("uri");
        assert_eq!(
            path_and_query(&uri),
            "/api/boards/x/events?name=Ana&access_token=REDACTED"
        );
        let uri: Uri = "/x?access%5Ftoken=abc&Token=def".parse().expect("uri");
        assert_eq!(
            path_and_query(&uri),
            "/x?access%5Ftoken=REDACTED&Token=REDACTED"
        );
        let uri: Uri = "/healthz".parse().expect("uri");
        assert_eq!(path_and_query(&uri), "/healthz");
    }
}
