//! Keep credentials out of logs, error messages and `/healthz` (pure). Text that may quote a
//! connection string, a URL or a setting goes through [`text`] before anyone sees it.

/// What a hidden value is shown as.
pub const MASK: &str = "***";

/// A setting whose value is a credential: `password`, `sslpassword`, `PGPASSWORD`,
/// `secret_access_key`, `TIDEWAL_KEY`, `token`... (the last part of a dotted key counts).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.rsplit('.').next().unwrap_or(key).to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "credential"].iter().any(|s| k.contains(s))
        || k.ends_with("_key")
        || k == "key"
}

/// `text` with URL passwords, every URL query value and the values of secret `key=value`
/// settings replaced by [`MASK`]. Over-redacts rather than leaks when the text is malformed.
pub fn text(s: &str) -> String {
    pairs(&urls(s))
}

/// Stops a URL or a bare value: whitespace and the quotes around it.
fn ends_token(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>')
}

/// Every `scheme://user:password@host/path?k=v` in `s`: the password and the query values masked.
fn urls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let start = i + 3;
        out.push_str(&rest[..start]);
        let end = rest[start..].find(ends_token).map_or(rest.len(), |n| start + n);
        out.push_str(&url_tail(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The part of a URL after `://`.
fn url_tail(t: &str) -> String {
    // Credentials end at the last '@' before the path: a password may hold '@' or '?'.
    let authority = t.find('/').unwrap_or(t.len());
    let (userinfo, hostpart) = match t[..authority].rfind('@') {
        Some(at) => (Some(&t[..at]), &t[at + 1..]),
        None => (None, t),
    };
    let mut out = String::with_capacity(t.len());
    if let Some(u) = userinfo {
        match u.split_once(':') {
            Some((user, _)) => {
                out.push_str(user);
                out.push(':');
                out.push_str(MASK);
            }
            None => out.push_str(u),
        }
        out.push('@');
    }
    match hostpart.split_once('?') {
        None => out.push_str(hostpart),
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let masked: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) => format!("{k}={MASK}"),
                    None => p.to_string(),
                })
                .collect();
            out.push_str(&masked.join("&"));
        }
    }
    out
}

/// Every `key=value` or `key = 'value'` whose key is secret: the value masked.
fn pairs(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let before = rest[..eq].trim_end();
        let key_start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
            .map_or(0, |i| i + before[i..].chars().next().map_or(1, char::len_utf8));
        let key = &before[key_start..];
        out.push_str(&rest[..=eq]);
        rest = &rest[eq + 1..];
        if key.is_empty() || !is_secret_key(key) {
            continue;
        }
        let value = rest.trim_start();
        out.push_str(&rest[..rest.len() - value.len()]);
        let taken = match value.chars().next() {
            Some(q @ ('\'' | '"')) => quoted_len(value, q),
            Some(_) => bare_len(value),
            None => 0,
        };
        if taken > 0 {
            match value.chars().next() {
                Some(q @ ('\'' | '"')) => {
                    out.push(q);
                    out.push_str(MASK);
                    if value[..taken].len() > 1 && value[..taken].ends_with(q) {
                        out.push(q);
                    }
                }
                _ => out.push_str(MASK),
            }
        }
        rest = &value[taken..];
    }
    out.push_str(rest);
    out
}

/// Bytes of a bare value: to whitespace (conninfo) or '&' (a query string); `\` escapes.
fn bare_len(value: &str) -> usize {
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if ends_token(c) || c == '&' => return i,
            _ => {}
        }
    }
    value.len()
}

/// Bytes of a value quoted with `q`, both quotes included (`\` escapes); all of it if unclosed.
fn quoted_len(value: &str, q: char) -> usize {
    let mut escaped = false;
    for (i, c) in value.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if c == q => return i + c.len_utf8(),
            _ => {}
        }
    }
    value.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn secret_keys() {
        for k in ["password", "sslpassword", "PGPASSWORD", "secret_access_key", "TIDEWAL_KEY", "s3.secret_access_key"] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in ["host", "user", "sslkey", "sslmode", "key_file", "url", "dbname", "conninfo"] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn urls_lose_passwords_and_query_values() {
        assert_eq!(
            text("cannot connect to postgresql://rep:hunter2@db:5432/app?sslpassword=x&application_name=a now"),
            "cannot connect to postgresql://rep:***@db:5432/app?sslpassword=***&application_name=*** now"
        );
        assert_eq!(text("postgres://rep@db/app"), "postgres://rep@db/app");
        assert_eq!(text("\"postgresql://u:p@ss?w@rd@h/d\""), "\"postgresql://u:***@h/d\"");
        assert_eq!(
            text("GET https://b.s3.amazonaws.com/x?X-Amz-Signature=abc&X-Amz-Credential=def: 403"),
            "GET https://b.s3.amazonaws.com/x?X-Amz-Signature=***&X-Amz-Credential=*** 403"
        );
        assert_eq!(text("file:///var/lib/tidewal/repo"), "file:///var/lib/tidewal/repo");
    }

    #[test]
    fn secret_settings_lose_their_values() {
        assert_eq!(text("host=db password=hunter2 user=rep"), "host=db password=*** user=rep");
        assert_eq!(text("host=db password = 'hun ter\\'2' user=rep"), "host=db password = '***' user=rep");
        assert_eq!(text("secret_access_key = \"abc\"\n"), "secret_access_key = \"***\"\n");
        assert_eq!(text("sslmode=\"require;password=hunter2\" bad"), "sslmode=\"require;password=***\" bad");
        assert_eq!(text("PGPASSWORD=hunter2"), "PGPASSWORD=***");
        assert_eq!(text("password=hun\\ ter2 port=x"), "password=*** port=x");
        assert_eq!(text("password='unterminated hunter2"), "password='***");
        assert_eq!(text("a == b, x=1, sslkey=/k"), "a == b, x=1, sslkey=/k");
    }

    proptest! {
        /// Whatever surrounds it, no part of a password in a URL or a setting survives (its
        /// pieces are marked with a character the surrounding text never has).
        #[test]
        fn passwords_never_survive(
            a in "[A-Za-z0-9!#$%^*()+,.;:=?@~\\[\\]{}|-]{0,12}",
            b in "[A-Za-z0-9!#$%^*()+,.;:=?@~\\[\\]{}|-]{0,12}",
            before in "[ -~]{0,20}",
            after in "[ -~]{0,20}",
            kind in 0..4u8,
        ) {
            let pw = format!("\u{3a9}{a}\u{3a9}{b}\u{3a9}");
            let s = match kind {
                0 => format!("{before} postgresql://u:{pw}@h/d {after}"),
                1 => format!("{before} postgresql://u@h/d?password={pw}&x=1{after}"),
                2 => format!("{before} password={pw}"),
                _ => format!("{before} secret_access_key = '{pw}'{after}"),
            };
            let r = text(&s);
            prop_assert!(!r.contains('\u{3a9}'), "{s:?} -> {r:?}");
        }
    }
}
