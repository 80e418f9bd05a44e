//! Keeping credentials out of what dr prints: storage and database URLs may carry a user
//! and password (`http://user:secret@host`), and lower layers (HTTP clients, drivers) put
//! the URLs they use into their error messages.

/// `text` with the user-info part of every `scheme://user:password@host` replaced by `***`.
pub fn redact_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#' or white space.
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A string that `Debug` prints as is (for already formatted, redacted text).
pub(crate) struct Verbatim(pub(crate) String);

impl std::fmt::Debug for Verbatim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url_credentials as r;

    #[test]
    fn user_info_is_replaced_and_everything_else_kept() {
        assert_eq!(
            r("GET http://user:s3cret@127.0.0.1:1/bucket/x failed; see postgres://app:pw@db/app"),
            "GET http://***@127.0.0.1:1/bucket/x failed; see postgres://***@db/app"
        );
        assert_eq!(r("s3://bucket/prefix a://b"), "s3://bucket/prefix a://b");
        assert_eq!(r("x://u:p@h"), "x://***@h");
        assert_eq!(r("no urls"), "no urls");
    }
}
