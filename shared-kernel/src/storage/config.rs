use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Where one module's database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// `<data_dir>/<module>.sqlite`.
    Sqlite { data_dir: PathBuf },
    /// A Postgres database reached with an administrative URL; the module's own role and
    /// schema are created there and the module logs in as that role.
    Postgres { admin_url: String },
}

impl Backend {
    /// Where `module`'s store lives, for messages: the SQLite file, or the Postgres URL
    /// (without its password) and schema.
    pub fn location(&self, module: &str) -> String {
        match self {
            Backend::Sqlite { data_dir } => {
                super::sqlite::path(module, data_dir).display().to_string()
            }
            Backend::Postgres { admin_url } => {
                format!("{} (schema {module})", redact_password(admin_url))
            }
        }
    }
}

/// `url` with its password, if any, replaced by `***`: safe to log.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // The user info ends at the authority's last `@` (a password may contain `@`).
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match user_info.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_owned(),
    }
}

/// Storage settings for the whole process, resolved per module by [`StorageConfig::backend_for`].
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Backend of every module without an override.
    pub default: Backend,
    /// Per-module overrides (`inventory` → its own Postgres server, say): a split deployment.
    pub overrides: BTreeMap<String, Backend>,
    /// Password given to the module login roles on Postgres; `None` leaves authentication to
    /// the server's rules (trust, peer, certificates).
    pub role_password: Option<String>,
    /// Upper bound of each module's Postgres pool, and of each SQLite reader pool.
    pub max_connections: u32,
    /// How long a request waits for a connection before the database counts as unavailable.
    pub acquire_timeout: Duration,
}

impl StorageConfig {
    /// SQLite files under `data_dir`, the embedded default.
    pub fn sqlite(data_dir: impl Into<PathBuf>) -> Self {
        Self::with_default(Backend::Sqlite {
            data_dir: data_dir.into(),
        })
    }

    /// One Postgres database; every module gets its own schema and role in it.
    pub fn postgres(admin_url: impl Into<String>) -> Self {
        Self::with_default(Backend::Postgres {
            admin_url: admin_url.into(),
        })
    }

    fn with_default(default: Backend) -> Self {
        Self {
            default,
            overrides: BTreeMap::new(),
            role_password: None,
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
        }
    }

    /// Parses a per-module override value: a `postgres://` URL or a `sqlite:` data directory.
    pub fn parse_backend(value: &str) -> Result<Backend, String> {
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            Ok(Backend::Postgres {
                admin_url: value.to_owned(),
            })
        } else if let Some(dir) = value.strip_prefix("sqlite:") {
            let dir = dir.trim_start_matches("//");
            if dir.is_empty() {
                return Err("a sqlite: override needs a data directory".into());
            }
            Ok(Backend::Sqlite {
                data_dir: PathBuf::from(dir),
            })
        } else {
            Err(format!(
                "expected a postgres:// URL or sqlite:<data-dir>, got {value:?}"
            ))
        }
    }

    /// The backend the named module uses.
    pub fn backend_for(&self, module: &str) -> &Backend {
        self.overrides.get(module).unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::redact_password;

    #[test]
    fn a_logged_url_never_shows_its_password() {
        assert_eq!(
            redact_password("postgres://admin:s3cr@t@db.example:5432/shop?sslmode=require"),
            "postgres://admin:***@db.example:5432/shop?sslmode=require"
        );
        assert_eq!(
            redact_password("postgres://postgres@127.0.0.1:5432/shop"),
            "postgres://postgres@127.0.0.1:5432/shop"
        );
        assert_eq!(
            redact_password("postgres://localhost/shop"),
            "postgres://localhost/shop"
        );
    }
}
