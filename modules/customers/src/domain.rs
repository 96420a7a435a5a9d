//! Validated values. Every constructor reports what is wrong as a [`FieldError`] so that one
//! request can list all its problems at once.

use shared_kernel::http::FieldError;
use shared_kernel::validate;

/// A customer's name: 1..=200 characters after trimming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerName(String);

impl CustomerName {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        validate::text("name", raw, Self::MAX_CHARS).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address: a valid addr-spec of at most 254 characters, kept as given but in Unicode
/// normalization form C (so one address typed with combining accents or precomposed is one
/// address); its lower-cased form is what uniqueness compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub const MAX_CHARS: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let normalized = validate::nfc(raw.trim());
        let trimmed = normalized.as_str();
        if trimmed.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(
                "email",
                format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        let valid = email_address::EmailAddress::parse_with_options(
            trimmed,
            email_address::Options::default()
                .without_display_text()
                .without_domain_literal(),
        )
        .is_ok()
            // A shop delivers mail over the internet: require a dotted domain.
            && trimmed
                .rsplit_once('@')
                .is_some_and(|(_, domain)| domain.contains('.') && !domain.ends_with('.'));
        if valid {
            Ok(Self(trimmed.to_owned()))
        } else {
            Err(FieldError::new("email", "must be a valid email address"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form compared for uniqueness.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(CustomerName::parse("  Ada  ").unwrap().as_str(), "Ada");
        assert!(CustomerName::parse("   ").is_err());
        assert!(CustomerName::parse(&"é".repeat(200)).is_ok());
        assert!(CustomerName::parse(&"é".repeat(201)).is_err());
        assert!(CustomerName::parse("a\u{0}b").is_err());
    }

    #[test]
    fn emails_must_be_plain_addresses_with_a_dotted_domain() {
        for ok in ["ada@example.com", "Ada.Lovelace+shop@Example.co.uk"] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "Ada <ada@example.com>",
            "ada@@example.com",
            "ada@[127.0.0.1]",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn emails_are_kept_in_normalization_form_c() {
        let decomposed = Email::parse("jose\u{0301}@example.com").unwrap();
        let composed = Email::parse("jos\u{00E9}@example.com").unwrap();
        assert_eq!(decomposed, composed);
        assert_eq!(decomposed.as_str(), "jos\u{00E9}@example.com");
    }

    #[test]
    fn names_with_direction_overrides_or_nothing_visible_are_refused() {
        assert!(CustomerName::parse("\u{202E}ecnalevoL adA").is_err());
        assert!(CustomerName::parse("\u{200B}\u{200B}").is_err());
    }

    #[test]
    fn email_uniqueness_ignores_case() {
        let a = Email::parse("Ada@Example.com").unwrap();
        let b = Email::parse("ada@example.COM").unwrap();
        assert_eq!(a.normalized(), b.normalized());
        assert_eq!(a.as_str(), "Ada@Example.com");
    }
}
