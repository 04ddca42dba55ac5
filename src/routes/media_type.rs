//! `Content-Type` read as RFC 9110 §8.3.1 writes it: `type "/" subtype *( OWS ";" OWS
//! [ parameter ] )`, names compared case-insensitively, parameter values a token or a quoted
//! string.
//!
//! Written here rather than taken from `mime` (which actix-web uses): `mime` refuses the
//! optional whitespace before `;` that the grammar allows (`application/json ; charset=utf-8`),
//! so a conforming client would be told its JSON is not JSON.

/// A parsed media type: `essence` is `type/subtype` in lower case; parameter names are in
/// lower case, values as sent (unquoted).
#[derive(Debug, PartialEq)]
pub struct MediaType {
    pub essence: String,
    pub parameters: Vec<(String, String)>,
}

impl MediaType {
    /// The value of parameter `name` (lower case), if present.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// JSON as RFC 8259 defines it: `application/json` or a `+json` structured syntax
    /// (RFC 6839), in UTF-8 (the only charset JSON has; `charset` is optional).
    pub fn is_json(&self) -> bool {
        let json = self.essence == "application/json"
            || (self.essence.starts_with("application/") && self.essence.ends_with("+json"));
        json && self
            .parameter("charset")
            .is_none_or(|c| c.eq_ignore_ascii_case("utf-8"))
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn is_ows(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// Parses a `Content-Type` value; `None` when it does not follow the grammar.
pub fn parse(value: &str) -> Option<MediaType> {
    let bytes = value.as_bytes();
    let mut at = 0;
    let token = |at: &mut usize| -> Option<String> {
        let start = *at;
        while *at < bytes.len() && is_tchar(bytes[*at]) {
            *at += 1;
        }
        (*at > start).then(|| value[start..*at].to_ascii_lowercase())
    };
    while at < bytes.len() && is_ows(bytes[at]) {
        at += 1;
    }
    let kind = token(&mut at)?;
    if bytes.get(at) != Some(&b'/') {
        return None;
    }
    at += 1;
    let subtype = token(&mut at)?;
    let mut parameters = Vec::new();
    loop {
        while at < bytes.len() && is_ows(bytes[at]) {
            at += 1;
        }
        match bytes.get(at) {
            None => break,
            Some(b';') => at += 1,
            Some(_) => return None,
        }
        while at < bytes.len() && is_ows(bytes[at]) {
            at += 1;
        }
        // `[ parameter ]`: an empty one (`a/b;;c=d`, `a/b;`) is allowed.
        if matches!(bytes.get(at), None | Some(b';')) {
            continue;
        }
        let name = token(&mut at)?;
        if bytes.get(at) != Some(&b'=') {
            return None;
        }
        at += 1;
        let value = if bytes.get(at) == Some(&b'"') {
            at += 1;
            let mut text = Vec::new();
            loop {
                match *bytes.get(at)? {
                    b'"' => {
                        at += 1;
                        break;
                    }
                    b'\\' => {
                        text.push(*bytes.get(at + 1)?);
                        at += 2;
                    }
                    c => {
                        text.push(c);
                        at += 1;
                    }
                }
            }
            String::from_utf8(text).ok()?
        } else {
            let start = at;
            token(&mut at)?;
            value[start..at].to_string()
        };
        parameters.push((name, value));
    }
    Some(MediaType {
        essence: format!("{kind}/{subtype}"),
        parameters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(value: &str) -> bool {
        parse(value).is_some_and(|m| m.is_json())
    }

    #[test]
    fn json_in_every_form_the_grammar_allows() {
        for value in [
            "application/json",
            "Application/JSON",
            "application/json;charset=utf-8",
            "application/json; charset=utf-8",
            "application/json ; charset=utf-8",
            "application/json\t;\tcharset=UTF-8",
            "application/json; charset=\"utf-8\"",
            "application/json;",
            "application/json; ; charset=utf-8",
            "application/json; foo=\"a;b\\\"c\"",
            "application/merge-patch+json",
            " application/json ",
        ] {
            assert!(json(value), "{value:?} is JSON");
        }
    }

    #[test]
    fn what_is_not_json_or_not_a_media_type() {
        for value in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
            "text/json+xml",
            "application/json; charset=latin1",
            "application / json",
            "application/json charset=utf-8",
            "application/json; charset = utf-8",
            "application/json; charset=\"utf-8",
            "application/",
            "json",
            "",
        ] {
            assert!(!json(value), "{value:?} is not JSON");
        }
    }

    #[test]
    fn parameters_keep_their_values() {
        let parsed = parse("Text/Plain; Charset=\"ISO-8859-1\"; q=x").expect("parses");
        assert_eq!(parsed.essence, "text/plain");
        assert_eq!(parsed.parameter("charset"), Some("ISO-8859-1"));
        assert_eq!(parsed.parameter("q"), Some("x"));
    }
}
