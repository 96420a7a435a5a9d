//! Field validators shared by modules' value types. Each returns the cleaned value or a
//! [`FieldError`] naming the field.

use crate::http::FieldError;

/// Free text: trimmed, `1..=max_chars` characters, no control characters.
pub fn text(field: &str, raw: &str, max_chars: usize) -> Result<String, FieldError> {
    let trimmed = raw.trim();
    let chars = trimmed.chars().count();
    if chars == 0 {
        Err(FieldError::new(field, "must not be empty"))
    } else if chars > max_chars {
        Err(FieldError::new(
            field,
            format!("must be at most {max_chars} characters"),
        ))
    } else if trimmed.chars().any(char::is_control) {
        Err(FieldError::new(
            field,
            "must not contain control characters",
        ))
    } else {
        Ok(trimmed.to_owned())
    }
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
