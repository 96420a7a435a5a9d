//! Validation of a new order's shape, before any other module is asked anything.

use std::collections::HashSet;

use orders_api::{MAX_LINES, MAX_QUANTITY, NewOrder};
use shared_kernel::http::FieldError;

/// Checks the lines of `order`: 1..=100 of them, quantities 1..=10 000, each product once.
/// Every problem is reported, each naming its field.
pub fn check_shape(order: &NewOrder) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    if order.items.is_empty() || order.items.len() > MAX_LINES {
        errors.push(FieldError::new(
            "items",
            format!("must have 1 to {MAX_LINES} lines"),
        ));
    }
    let mut seen = HashSet::new();
    for (i, item) in order.items.iter().enumerate() {
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            errors.push(FieldError::new(
                format!("items[{i}].quantity"),
                format!("must be from 1 to {MAX_QUANTITY}"),
            ));
        }
        if !seen.insert(item.product_id) {
            errors.push(FieldError::new(
                format!("items[{i}].product_id"),
                "appears more than once in this order",
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use orders_api::NewOrderItem;
    use uuid::Uuid;

    use super::*;

    fn order(items: Vec<NewOrderItem>) -> NewOrder {
        NewOrder {
            customer_id: Uuid::now_v7(),
            items,
        }
    }

    fn fields(result: Result<(), Vec<FieldError>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn lines_quantities_and_duplicates_are_checked() {
        assert_eq!(fields(check_shape(&order(vec![]))), ["items"]);
        let product = Uuid::now_v7();
        let line = |quantity| NewOrderItem {
            product_id: product,
            quantity,
        };
        assert_eq!(
            fields(check_shape(&order(vec![line(0), line(10_001)]))),
            [
                "items[0].quantity",
                "items[1].quantity",
                "items[1].product_id"
            ]
        );
        let many = (0..=MAX_LINES)
            .map(|_| NewOrderItem {
                product_id: Uuid::now_v7(),
                quantity: 1,
            })
            .collect();
        assert_eq!(fields(check_shape(&order(many))), ["items"]);
        assert!(
            check_shape(&order(vec![
                line(1),
                NewOrderItem {
                    product_id: Uuid::now_v7(),
                    quantity: MAX_QUANTITY
                }
            ]))
            .is_ok()
        );
    }
}
