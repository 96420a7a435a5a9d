//! Wiring: which module implementations run in this process and on which databases.
//!
//! **Architecture Invariant:** this is the only place that names module implementation crates.

use std::sync::Arc;

use anyhow::Context as _;
use customers_api::CustomersApi;
use futures::future::join_all;
use inventory_api::InventoryApi;
use orders_api::OrdersApi;
use payments_api::PaymentsApi;
use shared_kernel::messaging::{Bus, DeliveryConfig};
use shared_kernel::storage::{
    Backend, Migrations, ModuleDb, OpenError, StorageConfig, redact_password,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::ModuleSet;

/// What `app` needs to know of a module to run it.
#[derive(Debug)]
pub struct Registration {
    pub name: &'static str,
    pub migrations: &'static Migrations,
    /// The integration event types it publishes.
    pub publishes: &'static [&'static str],
    /// The modules whose APIs it calls.
    pub calls: &'static [&'static str],
}

/// Every module of the shop.
pub const REGISTRY: [Registration; 4] = [
    Registration {
        name: customers::NAME,
        migrations: &customers::MIGRATIONS,
        publishes: customers::PUBLISHES,
        calls: customers::CALLS,
    },
    Registration {
        name: inventory::NAME,
        migrations: &inventory::MIGRATIONS,
        publishes: inventory::PUBLISHES,
        calls: inventory::CALLS,
    },
    Registration {
        name: orders::NAME,
        migrations: &orders::MIGRATIONS,
        publishes: orders::PUBLISHES,
        calls: orders::CALLS,
    },
    Registration {
        name: payments::NAME,
        migrations: &payments::MIGRATIONS,
        publishes: payments::PUBLISHES,
        calls: payments::CALLS,
    },
];

/// The module owning the database `store`: `orders` for its read store `orders_read`.
pub fn owner_of(store: &'static str) -> &'static str {
    REGISTRY
        .iter()
        .map(|module| module.name)
        .find(|name| {
            store
                .strip_prefix(name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
        })
        .unwrap_or(store)
}

/// Every store of the selected modules with its migrations: each module's database, and the
/// orders read store when orders is selected.
fn stores(selected: &ModuleSet) -> impl Iterator<Item = (&'static str, &'static Migrations)> + '_ {
    REGISTRY
        .iter()
        .filter(|module| selected.contains(module.name))
        .map(|module| (module.name, module.migrations))
        .chain(
            selected
                .contains(orders::NAME)
                .then_some((orders::READ_STORE, &orders::READ_MIGRATIONS)),
        )
}

/// Says where the data lives: the backend, the data directory or the database URL (without
/// its password), and each module's override.
fn log_storage(storage: &StorageConfig) {
    /// `module` is set for an override only.
    fn log(backend: &Backend, module: Option<&str>) {
        match backend {
            Backend::Sqlite { data_dir } => tracing::info!(
                module,
                backend = "sqlite",
                data_dir = %data_dir.display(),
                "Module databases are SQLite files."
            ),
            Backend::Postgres { admin_url } => tracing::info!(
                module,
                backend = "postgres",
                database_url = %redact_password(admin_url),
                "Module databases are Postgres schemas."
            ),
        }
    }
    log(&storage.default, None);
    for (module, backend) in &storage.overrides {
        log(backend, Some(module));
    }
}

/// Settings for one-off commands, which run no subscription, timer or placement.
fn one_off_settings() -> ModuleSettings {
    ModuleSettings {
        default_credit_limit_cents: 0,
        saga_timeout: std::time::Duration::from_secs(30),
        delivery: DeliveryConfig::default(),
    }
}

/// Settings of the modules' behaviour (as opposed to where their data lives).
#[derive(Debug, Clone, Copy)]
pub struct ModuleSettings {
    pub default_credit_limit_cents: i64,
    pub saga_timeout: std::time::Duration,
    pub delivery: DeliveryConfig,
}

/// Background timers of the local modules (the orders saga deadline), stopped on shutdown.
#[derive(Debug)]
pub struct Timers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Timers {
    pub async fn stop(self) {
        self.stop.send_replace(true);
        join_all(self.tasks).await;
    }
}

/// The modules running in this process.
#[derive(Clone)]
pub struct Modules {
    /// Each local module's database handle, for readiness and shutdown.
    pub databases: Vec<ModuleDb>,
    pub customers: Option<Arc<dyn CustomersApi>>,
    pub inventory: Option<Arc<dyn InventoryApi>>,
    pub orders: Option<Arc<dyn OrdersApi>>,
    pub payments: Option<Arc<dyn PaymentsApi>>,
    /// The orders read model (`order_summaries`), when orders runs here.
    pub read_model: Option<orders::ReadModel>,
    /// The orders module itself, for its saga timer.
    saga_timer: Option<orders::Orders>,
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
    ///
    /// # Errors
    /// A configuration mistake retrying cannot fix (a Postgres database that does not exist).
    pub async fn start(
        selected: &ModuleSet,
        storage: &StorageConfig,
        settings: ModuleSettings,
    ) -> Result<Self, OpenError> {
        log_storage(storage);
        let opening = stores(selected)
            .map(|(name, migrations)| ModuleDb::connect(name, migrations, storage.clone()));
        let databases = join_all(opening)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::assemble(databases, settings))
    }

    /// Wires the modules of `databases` (each module whose database is there) and their
    /// subscriptions.
    fn assemble(databases: Vec<ModuleDb>, settings: ModuleSettings) -> Self {
        let db = |name: &str| databases.iter().find(|db| db.module() == name).cloned();
        let bus = Bus::new(settings.delivery);
        for database in &databases {
            bus.add_module(database.clone());
        }
        let customers = db(customers::NAME)
            .map(|db| Arc::new(customers::Customers::new(db)) as Arc<dyn CustomersApi>);
        let inventory = db(inventory::NAME)
            .map(|db| Arc::new(inventory::Inventory::new(db)) as Arc<dyn InventoryApi>);
        // Orders calls customers and inventory at placement; without them here (and, until
        // split mode, without remote clients) it cannot run in this process.
        let saga_timer = match (db(orders::NAME), &customers, &inventory) {
            (Some(db), Some(customers), Some(inventory)) => Some(orders::Orders::new(
                db,
                customers.clone(),
                inventory.clone(),
                orders::OrdersConfig {
                    saga_timeout: settings.saga_timeout,
                },
            )),
            (Some(_), _, _) => {
                tracing::warn!(
                    "The orders module needs customers and inventory in this process; its endpoints are off."
                );
                None
            }
            _ => None,
        };
        // Payments checks customers when a credit limit is set.
        let payments = match (db(payments::NAME), &customers) {
            (Some(db), Some(customers)) => Some(payments::Payments::new(
                db,
                customers.clone(),
                payments::PaymentsConfig {
                    default_credit_limit_cents: settings.default_credit_limit_cents,
                    ..payments::PaymentsConfig::default()
                },
            )),
            (Some(_), None) => {
                tracing::warn!(
                    "The payments module needs customers in this process; its endpoints are off."
                );
                None
            }
            _ => None,
        };
        let read_model = db(orders::READ_STORE).map(orders::ReadModel::new);
        let subscriptions = orders::subscriptions()
            .into_iter()
            .chain(read_model.iter().flat_map(orders::ReadModel::subscriptions))
            .chain(inventory::subscriptions())
            .chain(payments.iter().flat_map(payments::subscriptions));
        for subscription in subscriptions {
            bus.subscribe(subscription);
        }
        Self {
            bus,
            customers,
            inventory,
            payments: payments.map(|p| Arc::new(p) as Arc<dyn PaymentsApi>),
            orders: saga_timer
                .clone()
                .map(|orders| Arc::new(orders) as Arc<dyn OrdersApi>),
            saga_timer,
            read_model,
            databases,
        }
    }

    /// Starts the modules' timers: the saga deadline of orders.
    pub fn start_timers(&self) -> Timers {
        let (stop, stopped) = watch::channel(false);
        let tasks = self
            .saga_timer
            .iter()
            .map(|orders| {
                let orders = orders.clone();
                let stopped = stopped.clone();
                tokio::spawn(async move { orders.run_deadlines(stopped).await })
            })
            .collect();
        Timers { stop, tasks }
    }

    /// Opens every module's database now (failing if one cannot be opened), for one-off
    /// commands such as `seed-history`; no subscription or timer runs.
    pub async fn open_all(storage: &StorageConfig) -> anyhow::Result<Self> {
        let modules = Self::start(&ModuleSet::all(), storage, one_off_settings()).await?;
        for db in &modules.databases {
            db.ping(std::time::Duration::from_secs(5))
                .await
                .with_context(|| format!("opening the {} database", db.module()))?;
        }
        Ok(modules)
    }

    /// Opens every module's existing, migrated database, creating and migrating nothing: for
    /// commands that only read (`reconcile`). A store that is not there is an error naming
    /// where it was looked for.
    pub async fn open_existing(storage: &StorageConfig) -> Result<Self, OpenError> {
        let mut databases = Vec::new();
        for (name, migrations) in stores(&ModuleSet::all()) {
            match ModuleDb::open_existing(name, migrations, storage).await {
                Ok(db) => databases.push(db),
                Err(error) => {
                    join_all(databases.iter().map(ModuleDb::close)).await;
                    return Err(error);
                }
            }
        }
        Ok(Self::assemble(databases, one_off_settings()))
    }

    /// Creates or upgrades every module's database and prints what it applied to each;
    /// fails on the first that cannot be.
    pub async fn migrate(storage: &StorageConfig) -> anyhow::Result<()> {
        log_storage(storage);
        for (name, migrations) in stores(&ModuleSet::all()) {
            let migrated = ModuleDb::migrate(name, migrations, storage)
                .await
                .with_context(|| format!("migrating the {name} database"))?;
            println!("{name}: {migrated}");
        }
        Ok(())
    }

    pub async fn close(&self) {
        join_all(self.databases.iter().map(ModuleDb::close)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_publishes_events_named_after_itself() {
        for module in &REGISTRY {
            assert!(!module.publishes.is_empty(), "{}", module.name);
            for event_type in module.publishes {
                let prefix = format!("{}.", module.name);
                assert!(event_type.starts_with(&prefix), "{event_type}");
            }
        }
    }
}
