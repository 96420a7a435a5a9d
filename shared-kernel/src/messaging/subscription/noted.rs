//! The event the subscription's unit tests publish: a note about aggregate `id`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Noted {
    pub(crate) id: String,
}

crate::integration_events! {
    module "scratch";
    "note" by id: Noted;
}
