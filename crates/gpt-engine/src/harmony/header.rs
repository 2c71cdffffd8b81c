//! Message headers (`assistant<|channel|>commentary to=functions.f <|constrain|>json`):
//! the strict reading of openai-harmony 0.0.8 (`parse_header_from_string`), its non-strict
//! recovery of a header that a stop token closed, and a best-effort reading that never fails.

use super::message::Role;
use super::{HarmonyError, Result, CHANNEL, CONSTRAIN};

/// A parsed message header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Author role.
    pub role: Role,
    /// Author name (tools: `functions.NAME`).
    pub name: Option<String>,
    /// `to=` recipient, e.g. `functions.get_weather`.
    pub recipient: Option<String>,
    /// `analysis` | `commentary` | `final`.
    pub channel: Option<String>,
    /// Content type, e.g. `<|constrain|>json`.
    pub content_type: Option<String>,
}

impl Header {
    /// A header of `role` with nothing else set.
    pub fn of_role(role: Role) -> Self {
        Self {
            role,
            name: None,
            recipient: None,
            channel: None,
            content_type: None,
        }
    }
}

/// Parses a decoded header such as `assistant<|channel|>commentary to=functions.f <|constrain|>json`.
/// `role` is the already known role (the first completion message). Exactly openai-harmony's
/// strict reading: words left over after role, recipient and content type are an error.
pub fn parse_header(text: &str, role: Option<Role>) -> Result<Header> {
    let (header, rest) = split_header(text, role, true)?;
    if rest.is_some() {
        return Err(bad(text, "unexpected words in the header"));
    }
    Ok(header)
}

/// openai-harmony's non-strict recovery of a header that a stop token closed before any
/// `<|message|>`: channel and role are read, every other word is content (joined by one
/// space). Fails where openai-harmony fails (a channel marker without a name, an unknown role).
pub(crate) fn recover_header(text: &str, role: Option<Role>) -> Result<(Header, String)> {
    let (header, rest) = split_header(text, role, false)?;
    Ok((header, rest.unwrap_or_default()))
}

fn bad(text: &str, reason: &'static str) -> HarmonyError {
    HarmonyError::BadHeader {
        header: text.to_string(),
        reason,
    }
}

/// openai-harmony's `parse_header_from_string`: the header and the words it did not use.
fn split_header(
    text: &str,
    role: Option<Role>,
    parse_recipient_and_type: bool,
) -> Result<(Header, Option<String>)> {
    let mut s = text.to_string();
    let mut channel = None;
    if let Some(idx) = s.find(CHANNEL) {
        let after = &s[idx + CHANNEL.len()..];
        let end = after
            .find(|c: char| c.is_whitespace() || c == '<')
            .unwrap_or(after.len());
        if end == 0 {
            return Err(bad(text, "channel marker without a channel name"));
        }
        channel = Some(after[..end].to_string());
        s = format!("{}{}", &s[..idx], &after[end..]);
    }
    let mut s = s.trim().to_string();
    if s.contains(CONSTRAIN) {
        s = s
            .replace(CONSTRAIN, &format!(" {CONSTRAIN}"))
            .trim()
            .to_string();
    }
    let mut parts: Vec<&str> = s.split_ascii_whitespace().collect();
    let mut name = None;
    let role = match role {
        Some(r) => r,
        None => {
            let first = *parts.first().ok_or_else(|| bad(text, "no role"))?;
            let r = match Role::parse(first) {
                Some(r) => r,
                None if parts.len() > 1 || first.starts_with("to=") => {
                    parts.remove(0);
                    Role::Tool
                }
                None => return Err(bad(text, "unknown role")),
            };
            // openai-harmony names a tool author by the header's first word.
            if r == Role::Tool {
                name = Some(first.to_string());
            }
            r
        }
    };
    if parts.first() == Some(&role.as_str()) {
        parts.remove(0);
    }
    let mut recipient = None;
    let mut content_type = None;
    if parse_recipient_and_type && !parts.is_empty() {
        let n = parts.len();
        if let Some(last) = parts.pop() {
            if let Some(r) = last.strip_prefix("to=") {
                recipient = Some(r.to_string());
            } else if n == 1 {
                recipient = Some(last.to_string());
            } else {
                content_type = Some(last.to_string());
                if let Some(r) = parts.pop() {
                    recipient = Some(r.strip_prefix("to=").unwrap_or(r).to_string());
                }
            }
        }
    }
    let rest = (!parts.is_empty()).then(|| parts.join(" "));
    Ok((
        Header {
            role,
            name,
            recipient,
            channel,
            content_type,
        },
        rest,
    ))
}

/// A reading of any header text that never fails (for the lenient parser): every channel
/// marker is removed (the first named one is the channel), the first `to=` word is the
/// recipient, the first `<|constrain|>` word the content type, a leading role word the role
/// (else `role`, else assistant); the other words are returned joined by one space. No text
/// of a formatting token is left in what is returned.
pub(crate) fn salvage_header(text: &str, role: Option<Role>) -> (Header, String) {
    let mut s = text.to_string();
    let mut channel = None;
    while let Some(idx) = s.find(CHANNEL) {
        let after = &s[idx + CHANNEL.len()..];
        let end = after
            .find(|c: char| c.is_whitespace() || c == '<')
            .unwrap_or(after.len());
        if channel.is_none() && end > 0 {
            channel = Some(after[..end].to_string());
        }
        s = format!("{} {}", &s[..idx], &after[end..]);
    }
    let s = s.replace(CONSTRAIN, &format!(" {CONSTRAIN}"));
    let mut words: Vec<&str> = s.split_ascii_whitespace().collect();
    let mut header = Header::of_role(role.unwrap_or(Role::Assistant));
    header.channel = channel;
    match (role, words.first().and_then(|w| Role::parse(w))) {
        (Some(r), Some(w)) if r == w => {
            words.remove(0);
        }
        (None, Some(w)) => {
            header.role = w;
            if w == Role::Tool {
                header.name = Some(words[0].to_string());
            }
            words.remove(0);
        }
        _ => {}
    }
    if let Some(i) = words.iter().position(|w| w.starts_with("to=")) {
        let r = words.remove(i).trim_start_matches("to=");
        header.recipient = (!r.is_empty()).then(|| r.to_string());
    }
    if let Some(i) = words.iter().position(|w| w.starts_with(CONSTRAIN)) {
        header.content_type = Some(words.remove(i).to_string());
    }
    words.retain(|w| !w.starts_with(CONSTRAIN));
    (header, words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_reads_every_field() {
        let h = parse_header(
            "assistant<|channel|>commentary to=functions.f <|constrain|>json",
            None,
        )
        .unwrap();
        assert_eq!(h.role, Role::Assistant);
        assert_eq!(h.channel.as_deref(), Some("commentary"));
        assert_eq!(h.recipient.as_deref(), Some("functions.f"));
        assert_eq!(h.content_type.as_deref(), Some("<|constrain|>json"));
        // Adjacent constrain marker, recipient before the channel.
        let h = parse_header(
            " to=functions.g<|channel|>analysis<|constrain|>json",
            Some(Role::Assistant),
        )
        .unwrap();
        assert_eq!(h.recipient.as_deref(), Some("functions.g"));
        assert_eq!(h.channel.as_deref(), Some("analysis"));
        assert_eq!(h.content_type.as_deref(), Some("<|constrain|>json"));
    }

    #[test]
    fn strict_names_tool_authors() {
        let h = parse_header("functions.lookup to=assistant<|channel|>commentary", None).unwrap();
        assert_eq!(h.role, Role::Tool);
        assert_eq!(h.name.as_deref(), Some("functions.lookup"));
        assert_eq!(h.recipient.as_deref(), Some("assistant"));
        let h = parse_header("tool", None).unwrap();
        assert_eq!((h.role, h.name.as_deref()), (Role::Tool, Some("tool")));
    }

    #[test]
    fn strict_rejects_what_harmony_rejects() {
        for (text, role) in [
            ("<|channel|> final", Some(Role::Assistant)),
            ("", None),
            ("nobody", None),
            ("<|channel|>final one two three", Some(Role::Assistant)),
        ] {
            assert!(
                matches!(
                    parse_header(text, role),
                    Err(HarmonyError::BadHeader { .. })
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn recovery_keeps_words_as_content() {
        let (h, rest) =
            recover_header("<|channel|>analysis I must\nrefuse", Some(Role::Assistant)).unwrap();
        assert_eq!(h.channel.as_deref(), Some("analysis"));
        assert_eq!(h.recipient, None);
        assert_eq!(rest, "I must refuse");
        let (_, rest) = recover_header("assistant to=x json", Some(Role::Assistant)).unwrap();
        assert_eq!(rest, "to=x json");
        assert!(recover_header("<|channel|><x", Some(Role::Assistant)).is_err());
    }

    #[test]
    fn salvage_never_fails_and_leaves_no_markers() {
        for text in [
            "",
            "<|channel|>",
            "<|channel|><|channel|>final<|constrain|>",
            "garbage words <|constrain|>json to= <|channel|>x<|channel|>y",
            "to=functions.f",
        ] {
            let (h, rest) = salvage_header(text, None);
            assert!(!rest.contains("<|"), "{text:?} -> {rest:?}");
            assert_eq!(h.role, Role::Assistant, "{text:?}");
        }
        let (h, rest) = salvage_header("garbage <|channel|>x<|channel|>y to=functions.f", None);
        assert_eq!(h.channel.as_deref(), Some("x"));
        assert_eq!(h.recipient.as_deref(), Some("functions.f"));
        assert_eq!(rest, "garbage");
        let (h, rest) = salvage_header("user hi there", None);
        assert_eq!((h.role, rest.as_str()), (Role::User, "hi there"));
        let (h, _) = salvage_header("assistant <|channel|>final", Some(Role::Assistant));
        assert_eq!(h.channel.as_deref(), Some("final"));
    }
}
