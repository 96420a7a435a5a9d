//! Typed identifiers. Every id is a UUID v7, so ids sort by creation time and serve as
//! keyset-pagination cursors.

/// Defines a `Copy` newtype over `Uuid` with serde (as a plain UUID string), `Display`,
/// `FromStr` and an OpenAPI schema.
#[macro_export]
macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $crate::__uuid::Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn generate() -> Self {
                Self($crate::__uuid::Uuid::now_v7())
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(&self.0, f)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::__uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $crate::__uuid::Uuid::parse_str(s).map(Self)
            }
        }

        impl From<$crate::__uuid::Uuid> for $name {
            fn from(id: $crate::__uuid::Uuid) -> Self {
                Self(id)
            }
        }

        impl $crate::__utoipa::PartialSchema for $name {
            fn schema() -> $crate::__utoipa::openapi::RefOr<$crate::__utoipa::openapi::schema::Schema> {
                $crate::ids::uuid_schema()
            }
        }

        impl $crate::__utoipa::ToSchema for $name {}
    };
}

/// The OpenAPI schema of every id: a string in `uuid` format.
pub fn uuid_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
        .into()
}

#[cfg(test)]
mod tests {
    crate::define_id!(
        /// An id for the test.
        ThingId
    );

    #[test]
    fn ids_serialize_as_plain_uuid_strings_and_sort_by_creation() {
        let a = ThingId::generate();
        let b = ThingId::generate();
        assert!(a < b);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, format!("\"{a}\""));
        assert_eq!(json.trim_matches('"').parse::<ThingId>().unwrap(), a);
    }
}
