//! Field validators shared by modules' value types. Each returns the cleaned value or a
//! [`FieldError`] naming the field.

use unicode_normalization::UnicodeNormalization as _;

use crate::http::FieldError;

/// Free text such as a name: trimmed, in Unicode normalization form C (so that a name typed
/// with combining accents and the same name typed precomposed are one name), `1..=max_chars`
/// characters, at least one of them visible, and no control or bidirectional formatting
/// characters (a right-to-left override can make a name display as something else).
pub fn text(field: &str, raw: &str, max_chars: usize) -> Result<String, FieldError> {
    let normalized = nfc(raw.trim());
    let chars = normalized.chars().count();
    if chars == 0 {
        Err(FieldError::new(field, "must not be empty"))
    } else if chars > max_chars {
        Err(FieldError::new(
            field,
            format!("must be at most {max_chars} characters"),
        ))
    } else if normalized.chars().any(char::is_control) {
        Err(FieldError::new(
            field,
            "must not contain control characters",
        ))
    } else if normalized.chars().any(is_bidi_control) {
        Err(FieldError::new(
            field,
            "must not contain bidirectional formatting characters",
        ))
    } else if normalized
        .chars()
        .all(|c| c.is_whitespace() || is_default_ignorable(c))
    {
        Err(FieldError::new(
            field,
            "must contain at least one visible character",
        ))
    } else {
        Ok(normalized)
    }
}

/// `raw` in Unicode normalization form C.
pub fn nfc(raw: &str) -> String {
    raw.nfc().collect()
}

/// Unicode's `Bidi_Control` property (PropList.txt): the marks, embeddings, overrides and
/// isolates that reorder how text is displayed.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Unicode's `Default_Ignorable_Code_Point` property (DerivedCoreProperties.txt): characters
/// that render as nothing, such as zero-width spaces and joiners, variation selectors and the
/// Hangul fillers.
fn is_default_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// A code such as a SKU or a warehouse name: `1..=max_chars` of `[A-Za-z0-9._-]`, untrimmed.
pub fn code(field: &str, raw: &str, max_chars: usize) -> Result<String, FieldError> {
    let ok = (1..=max_chars).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(FieldError::new(
            field,
            format!("must be 1 to {max_chars} characters of A-Z, a-z, 0-9, '.', '_' or '-'"),
        ))
    }
}

/// An integer within `min..=max`.
pub fn range(field: &str, value: i64, min: i64, max: i64) -> Result<i64, FieldError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(FieldError::new(
            field,
            format!("must be from {min} to {max}"),
        ))
    }
}

/// The errors of several validations at once, or `Ok` when there are none.
pub fn all(errors: impl IntoIterator<Item = Option<FieldError>>) -> Result<(), Vec<FieldError>> {
    let errors: Vec<FieldError> = errors.into_iter().flatten().collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_bounded_in_characters() {
        assert_eq!(text("f", "  a b ", 3).unwrap(), "a b");
        assert!(text("f", " \t ", 3).is_err());
        assert!(text("f", "éééé", 3).is_err());
        assert!(text("f", "a\u{7}", 3).is_err());
    }

    #[test]
    fn text_refuses_bidirectional_overrides_and_invisible_only_values() {
        for bad in [
            "\u{202E}evil",
            "ab\u{2066}c",
            "a\u{200F}",
            "\u{200B}",
            "\u{200B}\u{200D}\u{FEFF}",
            " \u{2060} ",
        ] {
            assert!(text("f", bad, 10).is_err(), "{bad:?}");
        }
        // Joiners inside visible text are part of real names and emoji.
        assert!(text("f", "a\u{200D}b", 10).is_ok());
    }

    #[test]
    fn text_is_kept_in_normalization_form_c() {
        let decomposed = "Jose\u{0301}";
        let composed = "Jos\u{00E9}";
        assert_eq!(text("f", decomposed, 4).unwrap(), composed);
        assert_eq!(text("f", composed, 4).unwrap(), composed);
    }

    #[test]
    fn codes_allow_only_the_safe_alphabet() {
        assert!(code("sku", "AB-12_x.y", 64).is_ok());
        for bad in ["", " ab", "a b", "a/b", "ä", &"x".repeat(65)] {
            assert!(code("sku", bad, 64).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ranges_are_inclusive() {
        assert!(range("n", 0, 0, 10).is_ok());
        assert!(range("n", 10, 0, 10).is_ok());
        assert!(range("n", -1, 0, 10).is_err());
        assert!(range("n", 11, 0, 10).is_err());
    }
}
