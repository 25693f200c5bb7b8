//! Query strings, with percent-decoded names: the JS SDK sends `api%2Dversion=`.

use percent_encoding::percent_decode_str;

/// Decoded query parameters in order.
#[derive(Debug, Default, Clone)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses a raw query string (without `?`). Undecodable bytes become U+FFFD.
    pub fn parse(raw: &str) -> Self {
        Query(
            raw.split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (decode(name), decode(value))
                })
                .collect(),
        )
    }

    /// The first value of a parameter; names compare case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn decode(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// Parses an `application/x-www-form-urlencoded` body (`+` is a space).
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body).replace('+', " ");
    Query::parse(&text).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_names_and_values() {
        let q = Query::parse("api%2Dversion=7.6&maxresults=3&%24skiptoken=a%2Fb");
        assert_eq!(q.get("api-version"), Some("7.6"));
        assert_eq!(q.get("maxresults"), Some("3"));
        assert_eq!(q.get("$skiptoken"), Some("a/b"));
        assert_eq!(q.get("nothing"), None);
        let f = parse_form(b"grant_type=client_credentials&scope=https%3A%2F%2Fx%2F.default&a=b+c");
        assert_eq!(f[1].1, "https://x/.default");
        assert_eq!(f[2].1, "b c");
    }
}
