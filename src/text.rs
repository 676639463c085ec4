//! Quoting what a file holds in an error message.
//!
//! Errors name the offending key, value or tensor, and a damaged or hostile file may hold a
//! megabyte (or a line break, or a terminal escape) where a name was expected. Quotes are
//! shortened in the middle and kept on one line, so every error stays one readable line.

use std::borrow::Cow;

/// Most characters of a file's text quoted in a message.
const QUOTE: usize = 80;
/// Most characters of another crate's message that quotes a file (serde's, safetensors').
const MESSAGE: usize = 400;

/// `text` on one line, its middle replaced by `…` when longer than `max` characters.
fn clip_to(text: &str, max: usize) -> Cow<'_, str> {
    let count = text.chars().count();
    if count <= max && !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let one_line = || text.chars().map(|c| if c.is_control() { ' ' } else { c });
    if count <= max {
        return Cow::Owned(one_line().collect());
    }
    let keep = max / 2;
    let head: String = one_line().take(keep).collect();
    let tail: String = one_line().skip(count - keep).collect();
    Cow::Owned(format!("{head}…{tail}"))
}

/// A name or value from a file, fit to quote in an error.
pub fn clip(text: &str) -> Cow<'_, str> {
    clip_to(text, QUOTE)
}

/// Another crate's error message about a file, fit to show in an error: its start (what is
/// wrong) and end (where) are kept.
pub fn clip_message(message: &str) -> Cow<'_, str> {
    clip_to(message, MESSAGE)
}

/// A JSON error with its quotes of the document clipped (serde quotes a whole offending string,
/// key or variant).
pub fn json_error(e: serde_json::Error) -> anyhow::Error {
    anyhow::anyhow!("{}", clip_message(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_and_long_text_is_cut_in_the_middle() {
        assert_eq!(clip("embeddings.cls_token"), "embeddings.cls_token");
        let long = format!("start{}end", "a".repeat(10_000));
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), QUOTE + 1);
        assert!(clipped.starts_with("start") && clipped.ends_with("end") && clipped.contains('…'));
        assert_eq!(clip("two\nlines\x1b[2J"), "two lines [2J");
        let e = serde_json::from_str::<u32>(&format!("\"{}\"", "x".repeat(5000))).unwrap_err();
        let text = json_error(e).to_string();
        assert!(
            text.starts_with("invalid type: string") && text.ends_with("column 5002"),
            "{text}"
        );
        assert!(text.chars().count() <= MESSAGE + 1);
    }
}
