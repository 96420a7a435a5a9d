//! Validated catalog and stock values.

use inventory_api::{MAX_ON_HAND, MAX_PRICE_CENTS, NewProduct, ProductPatch};
use shared_kernel::http::FieldError;
use shared_kernel::validate;

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_CODE_CHARS: usize = 64;

/// A validated new product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidProduct {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
}

impl ValidProduct {
    pub fn parse(input: &NewProduct) -> Result<Self, Vec<FieldError>> {
        let sku = validate::code("sku", &input.sku, MAX_CODE_CHARS);
        let name = validate::text("name", &input.name, MAX_NAME_CHARS);
        let price = validate::range("price_cents", input.price_cents, 0, MAX_PRICE_CENTS);
        match (sku, name, price) {
            (Ok(sku), Ok(name), Ok(price_cents)) => Ok(Self {
                sku,
                name,
                price_cents,
            }),
            (sku, name, price) => Err([sku.err(), name.err(), price.err()]
                .into_iter()
                .flatten()
                .collect()),
        }
    }
}

/// A validated product change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPatch {
    pub name: Option<String>,
    pub price_cents: Option<i64>,
}

impl ValidPatch {
    pub fn parse(patch: &ProductPatch) -> Result<Self, Vec<FieldError>> {
        let name = patch
            .name
            .as_deref()
            .map(|n| validate::text("name", n, MAX_NAME_CHARS))
            .transpose();
        let price = patch
            .price_cents
            .map(|p| validate::range("price_cents", p, 0, MAX_PRICE_CENTS))
            .transpose();
        match (name, price) {
            (Ok(name), Ok(price_cents)) => Ok(Self { name, price_cents }),
            (name, price) => Err([name.err(), price.err()].into_iter().flatten().collect()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.price_cents.is_none()
    }
}

/// A validated stock setting.
pub fn stock(warehouse: &str, on_hand: i64) -> Result<(String, i64), Vec<FieldError>> {
    let warehouse = validate::code("warehouse", warehouse, MAX_CODE_CHARS);
    let on_hand = validate::range("on_hand", on_hand, 0, MAX_ON_HAND);
    match (warehouse, on_hand) {
        (Ok(w), Ok(n)) => Ok((w, n)),
        (w, n) => Err([w.err(), n.err()].into_iter().flatten().collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_invalid_field_of_a_product_is_reported() {
        let errors = ValidProduct::parse(&NewProduct {
            sku: "no spaces".into(),
            name: " ".into(),
            price_cents: MAX_PRICE_CENTS + 1,
        })
        .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["sku", "name", "price_cents"]);
    }

    #[test]
    fn bounds_are_inclusive() {
        let ok = ValidProduct::parse(&NewProduct {
            sku: "A".repeat(64),
            name: "n".repeat(200),
            price_cents: MAX_PRICE_CENTS,
        });
        assert!(ok.is_ok());
        assert!(stock("w1", MAX_ON_HAND).is_ok());
        assert!(stock("w1", -1).is_err());
        assert!(stock("w/1", 1).is_err());
    }
}
