//! What a user sees when the program itself is wrong (a panic): one line that says it is a bug,
//! what stopped, where, and that it should be reported. Errors a user can cause never come here.

use std::any::Any;

/// The text a panic carried.
pub fn panic_text(payload: &(dyn Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    text.lines().next().unwrap_or("").to_string()
}

/// One line for a bug: `what` stopped, with the panic's text.
pub fn report(what: &str, text: &str) -> String {
    format!(
        "{what} stopped on a bug in FAE Studio {} ({text}); please report it with this line and \
         the command or steps that led to it",
        env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_one_line_that_asks_for_a_report() {
        let payload = std::panic::catch_unwind(|| panic!("index {} out of\nrange", 3)).unwrap_err();
        let text = panic_text(payload.as_ref());
        assert_eq!(text, "index 3 out of");
        let line = report("`fae-studio train`", &text);
        assert!(!line.contains('\n'));
        assert!(line.contains("`fae-studio train` stopped on a bug") && line.contains("report"));
    }
}
