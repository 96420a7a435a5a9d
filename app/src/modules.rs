//! Wiring: which module implementations run in this process and on which databases.
//!
//! **Architecture Invariant:** this is the only place that names module implementation crates.

use std::sync::Arc;

use anyhow::Context as _;
use customers_api::CustomersApi;
use futures::future::join_all;
use inventory_api::InventoryApi;
use shared_kernel::messaging::{Bus, DeliveryConfig};
use shared_kernel::storage::{Migrations, ModuleDb, StorageConfig};

use crate::config::ModuleSet;

/// What `app` needs to know of a module to run it.
#[derive(Debug)]
pub struct Registration {
    pub name: &'static str,
    pub migrations: &'static Migrations,
    /// The integration event types it publishes.
    pub publishes: &'static [&'static str],
}

/// Every module of the shop.
pub const REGISTRY: [Registration; 4] = [
    Registration {
        name: customers::NAME,
        migrations: &customers::MIGRATIONS,
        publishes: customers::PUBLISHES,
    },
    Registration {
        name: inventory::NAME,
        migrations: &inventory::MIGRATIONS,
        publishes: inventory::PUBLISHES,
    },
    Registration {
        name: orders::NAME,
        migrations: &orders::MIGRATIONS,
        publishes: orders::PUBLISHES,
    },
    Registration {
        name: payments::NAME,
        migrations: &payments::MIGRATIONS,
        publishes: payments::PUBLISHES,
    },
];

/// The modules running in this process.
#[derive(Clone)]
pub struct Modules {
    /// Each local module's database handle, for readiness and shutdown.
    pub databases: Vec<ModuleDb>,
    pub customers: Option<Arc<dyn CustomersApi>>,
    pub inventory: Option<Arc<dyn InventoryApi>>,
    /// Every subscription of the local modules, over their outboxes.
    pub bus: Bus,
}

impl std::fmt::Debug for Modules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Modules")
            .field("databases", &self.databases)
            .finish_non_exhaustive()
    }
}

impl Modules {
    /// Opens the databases of the selected modules concurrently. A database that cannot be
    /// opened does not stop the others: its module reports unavailable until it can.
    pub async fn start(
        selected: &ModuleSet,
        storage: &StorageConfig,
        default_credit_limit_cents: i64,
        delivery: DeliveryConfig,
    ) -> Self {
        let opening = REGISTRY
            .iter()
            .filter(|module| selected.contains(module.name))
            .map(|module| ModuleDb::connect(module.name, module.migrations, storage.clone()));
        let databases = join_all(opening).await;
        let db = |name: &str| databases.iter().find(|db| db.module() == name).cloned();
        let bus = Bus::new(delivery);
        for database in &databases {
            bus.add_module(database.clone());
        }
        let subscriptions = orders::subscriptions()
            .into_iter()
            .chain(payments::subscriptions(default_credit_limit_cents));
        for subscription in subscriptions {
            bus.subscribe(subscription);
        }
        Self {
            bus,
            customers: db(customers::NAME)
                .map(|db| Arc::new(customers::Customers::new(db)) as Arc<dyn CustomersApi>),
            inventory: db(inventory::NAME)
                .map(|db| Arc::new(inventory::Inventory::new(db)) as Arc<dyn InventoryApi>),
            databases,
        }
    }

    /// Creates or upgrades every module's database; fails on the first that cannot be.
    pub async fn migrate(storage: &StorageConfig) -> anyhow::Result<()> {
        for Registration {
            name, migrations, ..
        } in REGISTRY
        {
            let db = ModuleDb::open(name, migrations, storage)
                .await
                .with_context(|| format!("migrating the {name} database"))?;
            tracing::info!(module = name, "Module database is up to date.");
            db.close().await;
        }
        Ok(())
    }

    pub async fn close(&self) {
        join_all(self.databases.iter().map(ModuleDb::close)).await;
    }
}
