//! Names and free text a caller sends: their grammar and length limits, and how an error message
//! quotes them. A message quotes at most [`QUOTE_MAX`] bytes of what was sent, so that a huge
//! value never comes back in a status (gRPC trailers are limited to a few KiB by peers).

use crate::core::model::MAX_NAME_LEN;

/// Longest prefix of a caller's value that an error message repeats.
pub const QUOTE_MAX: usize = 64;

/// Longest location label of a node.
pub const MAX_LOCATION_LEN: usize = 63;

/// `s` as a Rust string literal, cut to its first [`QUOTE_MAX`] bytes (at a character boundary)
/// with its full length noted when it was longer.
pub fn quote(s: &str) -> String {
    if s.len() <= QUOTE_MAX {
        return format!("{s:?}");
    }
    let mut end = QUOTE_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &s[..end], s.len())
}

/// `s` bare when it is a short plain word (the common case: a node name in `spec.nodes[2] (c)`),
/// otherwise [`quote`]d.
pub fn label(s: &str) -> String {
    let plain = !s.is_empty()
        && s.len() <= QUOTE_MAX
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if plain { s.to_string() } else { quote(s) }
}

/// Provider ids, VN names and host ids: `[a-z0-9]` first, then `[a-z0-9._-]`, at most 63.
pub fn check_identifier(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > MAX_NAME_LEN {
        return Err(format!(
            "has {} bytes, longer than the limit of {MAX_NAME_LEN}",
            s.len()
        ));
    }
    let first = s.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err("must start with a lowercase letter or a digit".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "character {c:?} is not allowed (use a-z, 0-9, '-', '_', '.')"
        ));
    }
    Ok(())
}

/// Node names: letters, digits, `-` and `_`, starting with a letter or digit, at most 63
/// (they become guests' host names). Image names follow the same grammar.
pub fn check_node_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("name must not be empty".into());
    }
    if s.len() > MAX_NAME_LEN {
        return Err(format!(
            "name has {} bytes, longer than the limit of {MAX_NAME_LEN}",
            s.len()
        ));
    }
    if !s.as_bytes()[0].is_ascii_alphanumeric() {
        return Err("name must start with a letter or a digit".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
    {
        return Err(format!("name: character {c:?} is not allowed"));
    }
    Ok(())
}

/// Linux interface names: 1..=15 bytes, no '/', ':', whitespace, not `.`/`..`/`lo`.
pub fn check_ifname(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 15 {
        return Err(format!(
            "interface name {} must have 1 to 15 characters",
            quote(s)
        ));
    }
    if s == "." || s == ".." || s == "lo" {
        return Err(format!("interface name {s:?} is reserved"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "interface name {s:?}: character {c:?} is not allowed"
        ));
    }
    Ok(())
}

/// A node's location: a host label, printable ASCII without spaces, at most 63 bytes.
pub fn check_location(s: &str) -> Result<(), String> {
    if s.len() > MAX_LOCATION_LEN {
        return Err(format!(
            "location has {} bytes, longer than the limit of {MAX_LOCATION_LEN}",
            s.len()
        ));
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "location {}: character {c:?} is not allowed (printable ASCII without spaces)",
            quote(s)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_bounded() {
        assert_eq!(quote("abc"), "\"abc\"");
        let long = "é".repeat(3_000_000);
        let q = quote(&long);
        assert!(q.len() < 200, "{}", q.len());
        assert!(q.ends_with("... (6000000 bytes)"), "{q}");
        assert_eq!(label("c"), "c");
        assert_eq!(label("a b"), "\"a b\"");
        assert!(label(&"x".repeat(100)).len() < 100);
        assert!(
            check_identifier(&"a".repeat(64))
                .unwrap_err()
                .contains("64 bytes")
        );
        assert!(check_location("rack 1").is_err());
        assert!(check_location("zone=a").is_ok());
    }
}
